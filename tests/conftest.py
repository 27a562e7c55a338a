import os

# forked torch worlds hang if the parent used OpenMP threads (docs/platform-facts.md): set before torch is imported
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402

# Fixtures that start real torch.distributed worlds (tests/impl/conftest.py, tests/conformance/conftest.py and
# module fixtures built on them): a test that uses one is a real-world test, marked `multirank` here so that no
# such test can be left unmarked.
REAL_WORLD_FIXTURES = {"world", "real_run", "fast_config", "fr_dumps"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if REAL_WORLD_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.multirank)
