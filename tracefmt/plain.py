"""Plain-data unpickling: the only way lockstep reads a pickle (a Flight Recorder dump is untrusted input).

``loads_plain`` refuses every global, so only the types pickle encodes without one (dict, list, tuple,
str, bytes, int, float, bool, None) can come out; anything else raises ``pickle.UnpicklingError``.
"""
from __future__ import annotations

import io
import pickle


class PlainUnpickler(pickle.Unpickler):
    def find_class(self, module, name):  # noqa: D401 - refuse every global: plain data only
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a Flight Recorder dump (plain data only)")


def loads_plain(raw: bytes):
    """Unpickle plain data only (no globals)."""
    return PlainUnpickler(io.BytesIO(raw)).load()
