"""PP0: rank0 (Stage 0) and one Stage-1 rank that runs Phase B locally (docs/domain.md §3.5).

The protocol, its modelling choices and its faults are those of ``pp.py`` with a mesh of one: there
is no mesh_pg and no collective in Phase B, so the mesh-only bugs (wrong group, leader throws,
FRANKEN between mesh ranks) cannot occur here; the call-count bug becomes silent (FM-02: F in PP0).
"""
from ...model.api import CALL_COUNT
from ..registry import SpecInfo, Variant
from .pp import COMMON_VARIANTS, build_pp, pp_params


def build(params, variant, backend):
    return build_pp(params, variant, backend, mesh=1, name="pp0")


SPEC = SpecInfo(
    name="pp0",
    description="PP0: rank0 + one Stage-1 rank, p2p envelopes and results, overlap queues, epoch fence",
    params=pp_params(None),
    variants={
        **COMMON_VARIANTS,
        "pp0-local-recompute": Variant("Stage 1 decides recompute from its own knob and nobody checks the count",
                                       (CALL_COUNT,), params={"recompute": "R1", "faults": "none"}),
    },
    build=build,
)
