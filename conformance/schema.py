"""Compatibility alias: the trace schema lives in the neutral package ``lockstep.tracefmt`` (imported by
both impl/ and conformance/).  Import ``lockstep.tracefmt.schema`` in new code."""
from ..tracefmt.schema import *  # noqa: F401,F403
from ..tracefmt.schema import (_check_type, _json_default, _ENUMS, _IDS)  # noqa: F401
