"""The shipped specs through the testing API's one definition of "behaves as documented"
(lockstep.testing.check_configuration, the same function the pytest plugin runs per configuration),
and the plugin itself as a user meets it: a fresh directory with one spec file and no conftest.

The plugin is registered through the ``pytest11`` entry point when lockstep is installed; these tests
run lockstep from the source tree, so the inner pytest runs load it with ``-p lockstep.pytest_plugin``."""
from pathlib import Path

import pytest

import lockstep.model.fast  # noqa: F401  numpy's extension loads once per process: import it before pytester's
                            # in-process runs snapshot sys.modules, or the second run cannot re-import it
from lockstep.spec.registry import available, load
from lockstep.testing import check_configuration

pytest_plugins = ["pytester"]

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CASES = [(s, v) for s in available() for v in [None, *load(s).variants]]


def _marks(spec, variant):
    return [pytest.mark.slow] if (spec, variant) == ("pp1", None) else []  # pp1's hardened proof takes minutes


@pytest.mark.parametrize("spec, variant", [pytest.param(s, v, marks=_marks(s, v)) for s, v in CASES],
                         ids=[f"{s}::{v or 'hardened'}" for s, v in CASES])
def test_shipped_configuration_behaves_as_documented(spec, variant):
    check_configuration(spec, variant)


def _plugin_args() -> tuple:
    """Installed (CI: pip install), the pytest11 entry point already loads the plugin as ``lockstep``;
    from the source tree it must be named with -p (loading it twice is an error)."""
    from importlib.metadata import entry_points

    installed = any(ep.name == "lockstep" for ep in entry_points(group="pytest11"))
    return () if installed else ("-p", "lockstep.pytest_plugin")


PLUGIN = _plugin_args()


def test_fresh_directory_one_test_per_configuration_passes(pytester):
    pytester.makepyfile(pp_exchange_spec=(EXAMPLES / "pp_exchange_spec.py").read_text())
    assert not (pytester.path / "conftest.py").exists()
    r = pytester.runpytest(*PLUGIN, "-v")
    r.assert_outcomes(passed=3)
    r.stdout.fnmatch_lines(["*pp_exchange_spec.py::hardened PASSED*", "*pp_exchange_spec.py::send-first PASSED*",
                            "*pp_exchange_spec.py::tag-swap PASSED*",
                            "*lockstep*", "ok   pp_exchange_spec.py::send-first: DEADLOCK, * states, * s"])


def test_a_broken_hardened_spec_fails_with_its_counterexample(pytester):
    src = (EXAMPLES / "pp_exchange_spec.py").read_text().replace('send_first=(variant == "send-first")', "send_first=True")
    pytester.makepyfile(pp_exchange_spec=src)
    r = pytester.runpytest(*PLUGIN)
    r.assert_outcomes(failed=1, passed=2)
    r.stdout.fnmatch_lines(["*lockstep pp_exchange_spec.py::hardened*", "the hardened spec: expected HOLDS, got DEADLOCK",
                            "counterexample (4 steps*", "*send_to_peer*", "who waits on whom:*",
                            "FAIL pp_exchange_spec.py::hardened: DEADLOCK*"])


def test_a_variant_that_is_no_longer_caught_fails(pytester):
    src = (EXAMPLES / "hello_spec.py").read_text().replace('if variant != "worker-skips":', "if True:")
    pytester.makepyfile(hello_spec=src)
    r = pytester.runpytest(*PLUGIN)
    r.assert_outcomes(failed=1, passed=1)
    r.stdout.fnmatch_lines(["variant worker-skips: expected STRANDED, got HOLDS"])


@pytest.mark.slow
def test_ini_path_marker_params_and_options(pytester):
    d = pytester.mkdir("protocols")
    (d / "early_stop.py").write_text((EXAMPLES / "early_stop_spec.py").read_text()
                                     + "\nimport pytest\npytestmark = pytest.mark.lockstep(ranks=3)\n")
    (d / "helpers.py").write_text("X = 1\n")  # not a spec: no SPEC, not collected
    pytester.makeini("[pytest]\nlockstep_specs = protocols\n")
    r = pytester.runpytest(*PLUGIN, "-v", "--lockstep-cross-check", "--lockstep-no-reduction")
    r.assert_outcomes(passed=3)
    r.stdout.fnmatch_lines(["*protocols/early_stop.py::local-decision PASSED*",
                            "ok   protocols/early_stop.py::hardened: HOLDS (unreduced: HOLDS)*"])
    assert "helpers.py" not in r.stdout.str()
    r = pytester.runpytest(*PLUGIN, "-m", "lockstep", "-q", "--co")
    r.stdout.fnmatch_lines(["3 tests collected*"])


def test_a_spec_file_that_cannot_load_is_a_one_line_collection_error(pytester):
    pytester.makepyfile(bad_spec="from lockstep.spec.registry import SpecInfo\nSPEC = 3\n")
    r = pytester.runpytest(*PLUGIN)
    r.assert_outcomes(errors=1)
    r.stdout.fnmatch_lines(["lockstep: *bad_spec.py: SPEC is a int, expected a lockstep.spec.registry.SpecInfo"])


def test_without_the_plugin_nothing_is_collected(pytester):
    pytester.makepyfile(hello_spec=(EXAMPLES / "hello_spec.py").read_text())
    r = pytester.runpytest("-p", "no:lockstep", "-q")
    assert r.ret == pytest.ExitCode.NO_TESTS_COLLECTED
