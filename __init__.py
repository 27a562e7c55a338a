"""lockstep: a protocol lab for the control planes of multi-GPU streaming video diffusion.

One import namespace: ``lockstep.spec``, ``lockstep.model``, ``lockstep.impl``,
``lockstep.conformance``, ``lockstep.diagrams`` and ``lockstep.cli`` map to the top-level folders of
the repository (see pyproject.toml), so no name shadows a PyPI package such as ``diagrams``.
"""
__version__ = "0.1.0"
