"""The lockstep pytest plugin: every spec file becomes one test per configuration.

Registered through the ``pytest11`` entry point as ``lockstep`` (active when lockstep is installed;
``-p no:lockstep`` disables it; ``-p lockstep.pytest_plugin`` loads it where lockstep is only on the
path).  It collects:

- files named ``*_spec.py`` that define a lockstep ``SpecInfo`` (anywhere pytest looks);
- every ``.py`` file under the paths of the ``lockstep_specs`` ini option
  (``[tool.pytest.ini_options] lockstep_specs = ["protocols"]``)

that mentions ``SPEC`` or ``SpecInfo(`` (helper modules beside the specs are left alone).

Each file yields ``hardened`` (its verdict must be one of the spec's hardened classes, HOLDS unless
it says otherwise) and one test per variant (its verdict must be one of the variant's documented
classes), with ids like ``tp_spec.py::fm04-throw-after-header``.  Parameters: each variant's own
``Variant(params=...)``, then a module-level ``pytestmark = pytest.mark.lockstep(ranks=3)``.  Options:
``--lockstep-no-reduction`` (explore without reductions: shortest counterexamples) and
``--lockstep-cross-check`` (also explore without reductions and fail if the verdict class differs).
A failure prints the counterexample as ``lockstep check`` does; the terminal summary lists every
configuration's verdict, states and seconds.

Fixtures: ``lockstep_run(topology, fault=None, unsafe=None, backend="auto", **params)`` runs a real world
(gloo, or NCCL under torchrun where there is one GPU per rank; ``backend="nccl"`` skips without) under
a deadline and returns its trace directory (see lockstep.testing.run_world); use it with
``lockstep.testing.assert_conforms`` / ``assert_instance_of``.
"""
from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import pytest

SPEC_GLOB = "*_spec.py"
_RESULTS_KEY = pytest.StashKey[list]()


def pytest_addoption(parser):
    group = parser.getgroup("lockstep", "lockstep protocol specs")
    group.addoption("--lockstep-no-reduction", action="store_true", default=False,
                    help="check spec files without partial-order or symmetry reduction")
    group.addoption("--lockstep-cross-check", action="store_true", default=False,
                    help="also check without reductions and fail when the verdict class differs")
    parser.addini("lockstep_specs", type="paths", default=[],
                  help="folders (or files) whose .py files are lockstep specs, one test per configuration")


def pytest_configure(config):
    config.addinivalue_line("markers", "lockstep(**params): spec parameters for the lockstep spec tests of a file")
    config.stash[_RESULTS_KEY] = []


def _under_spec_paths(config, path: Path) -> bool:
    for root in config.getini("lockstep_specs"):
        root = Path(root)
        if path == root or root in path.parents:
            return True
    return False


_SPEC_TEXT = re.compile(r"\bSPEC\b|SpecInfo\(")


def _defines_spec(path: Path) -> bool:
    """A cheap look before importing a file: other projects name files ``*_spec.py`` too, and a spec
    folder may hold helper modules.  A file that mentions neither ``SPEC`` nor ``SpecInfo(`` is not
    collected; one that does but fails to load is a collection error with one line."""
    try:
        return _SPEC_TEXT.search(path.read_text(errors="replace")) is not None
    except OSError:
        return False


def pytest_collect_file(file_path: Path, parent):
    if file_path.suffix != ".py" or file_path.name.startswith(("conftest", "__")):
        return None
    wanted = _under_spec_paths(parent.config, file_path) or fnmatch.fnmatch(file_path.name, SPEC_GLOB)
    if wanted and _defines_spec(file_path):
        return SpecFile.from_parent(parent, path=file_path)
    return None


class SpecFile(pytest.File):
    def collect(self):
        from .testing import load

        info, _ = load(str(self.path))
        mod = _module_of(info)
        marks = [m for m in _marks(mod)]
        params = {}
        for m in marks:
            if m.name == "lockstep":
                params.update(m.kwargs)
        for variant in [None, *info.variants]:
            item = SpecItem.from_parent(self, name=variant or "hardened", variant=variant, params=params)
            for m in marks:
                item.add_marker(getattr(pytest.mark, m.name)(*m.args, **m.kwargs))
            yield item

    def repr_failure(self, excinfo):
        from .spec.registry import UsageError

        if isinstance(excinfo.value, UsageError):
            return f"lockstep: {excinfo.value}"
        return super().repr_failure(excinfo)


def _module_of(info):
    from .spec.loading import module_of

    return module_of(info)


def _marks(mod):
    if mod is None:
        return []
    pm = getattr(mod, "pytestmark", [])
    pm = pm if isinstance(pm, (list, tuple)) else [pm]
    return [getattr(m, "mark", m) for m in pm]


class SpecItem(pytest.Item):
    def __init__(self, *, variant, params, **kw):
        super().__init__(**kw)
        self.variant = variant
        self.params = dict(params)
        self.result = None

    def runtest(self):
        from .testing import ProtocolCheckFailed, check_configuration

        opt = self.config.getoption
        r = None
        try:
            r = check_configuration(str(self.path), self.variant, reduction=not opt("--lockstep-no-reduction"),
                                    cross_check=opt("--lockstep-cross-check"), **self.params)
        except ProtocolCheckFailed as e:
            r = e.result
            raise
        finally:
            if r is not None and hasattr(r, "verdict"):
                self.config.stash[_RESULTS_KEY].append((self.nodeid, r))
                self.user_properties.extend([("verdict", r.verdict), ("states", r.states), ("seconds", round(r.seconds, 3))])

    def repr_failure(self, excinfo, style=None):
        from .model.api import SpecError
        from .spec.registry import UsageError
        from .testing import ProtocolCheckFailed

        if isinstance(excinfo.value, ProtocolCheckFailed):
            return str(excinfo.value)
        if isinstance(excinfo.value, (SpecError, UsageError)):
            return f"lockstep: {excinfo.value}"
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.path, None, f"lockstep {self.path.name}::{self.name}"


def pytest_terminal_summary(terminalreporter, config):
    rows = config.stash.get(_RESULTS_KEY, [])
    if not rows:
        return
    terminalreporter.section("lockstep")
    for nodeid, r in rows:
        mark = "ok  " if r.as_expected else "FAIL"
        extra = f" (unreduced: {r.cross_checked})" if r.cross_checked else ""
        terminalreporter.write_line(f"{mark} {nodeid}: {r.verdict}{extra}, {r.states:,} states, {r.seconds:.2f} s")


@pytest.fixture
def lockstep_run(tmp_path_factory):
    """``lockstep_run(topology, fault=None, unsafe=None, deadline_s=60, backend="auto", launcher="auto",
    flight_recorder=False, **params) -> trace dir``: a real world recorded into a fresh temporary
    directory, every rank killed at the deadline (see lockstep.testing.run_world).  ``backend="auto"``
    runs NCCL under torchrun where torch sees one GPU per rank, else gloo with forked ranks;
    ``backend="nccl"`` on a machine without one GPU per rank SKIPS the test, naming both counts."""
    from .testing import NotEnoughGPUs, run_world

    def _run(topology: str, *, fault: str | None = None, unsafe: str | None = None, deadline_s: float = 60.0,
             backend: str = "auto", launcher: str = "auto", flight_recorder: bool = False, **params):
        d = tmp_path_factory.mktemp(f"lockstep-{topology}")
        try:
            return run_world(topology, d, fault=fault, unsafe=unsafe, deadline_s=deadline_s, backend=backend,
                             launcher=launcher, flight_recorder=flight_recorder, **params)
        except NotEnoughGPUs as e:
            pytest.skip(f"lockstep_run: {e}")
    return _run
