"""Reading the pickles lockstep's own search processes exchange: ``--workers`` batches and replies,
and the Ray actors' batches.  They are made by this search's own workers and actors, but they still go
through a restricted unpickler, so a batch can only ever rebuild data, never call anything.

A global is allowed when it is one of the reconstruction functions the caller names (the namedtuple
rebuilders of parallel.py and ray_search.py) or a class, from a module that is already imported, of
one of these kinds: the builtin data types; tuple subclasses (the spec's namedtuples), enums and
dataclasses; exceptions (a worker's error comes back as one); numpy's array and scalar rebuilders;
classes of ``lockstep.model`` and ``lockstep.spec``.  Anything else (``os.system``,
``subprocess.Popen``, a module that is not loaded) raises ``pickle.UnpicklingError``.  Flight
Recorder dumps, which come from users, take the stricter ``tracefmt.plain`` unpickler (no globals).
"""
from __future__ import annotations

import builtins
import dataclasses
import enum
import io
import pickle
import sys
from typing import Any, Mapping

_BUILTIN_TYPES = frozenset({tuple, list, dict, set, frozenset, int, float, complex, str, bytes, bytearray, bool,
                            slice, range, type(None)})
_NUMPY = frozenset({("numpy", "dtype"), ("numpy", "ndarray"), ("numpy.core.multiarray", "_reconstruct"),
                    ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
                    ("numpy._core.multiarray", "scalar"), ("numpy._core.numeric", "_frombuffer"),
                    ("numpy.core.numeric", "_frombuffer")})
_PACKAGE = __name__.rsplit(".", 2)[0]  # "lockstep"
_OWN = (f"{_PACKAGE}.model", f"{_PACKAGE}.spec")


def _resolve(module: str, name: str) -> Any:
    mod = sys.modules.get(module)  # never import: only what this process has loaded
    if mod is None:
        return None
    obj = mod
    for part in name.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _allowed_class(obj: Any) -> bool:
    if not isinstance(obj, type):
        return False
    if obj in _BUILTIN_TYPES:
        return True
    if issubclass(obj, (tuple, enum.Enum, BaseException)) or dataclasses.is_dataclass(obj):
        return True
    mod = getattr(obj, "__module__", "") or ""
    return any(mod == p or mod.startswith(p + ".") for p in _OWN)


class SearchUnpickler(pickle.Unpickler):
    def __init__(self, f, functions: Mapping[tuple[str, str], Any] = ()):
        super().__init__(f)
        self._functions = dict(functions)

    def find_class(self, module: str, name: str):
        fn = self._functions.get((module, name))
        if fn is not None:
            return fn
        if (module, name) in _NUMPY or module == "builtins":
            obj = getattr(builtins, name, None) if module == "builtins" else _resolve(module, name)
            if obj is not None and (module != "builtins" or _allowed_class(obj)):
                return obj
        else:
            obj = _resolve(module, name)
            if _allowed_class(obj):
                return obj
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a search batch "
                                     f"(data, the spec's types and errors only)")


def load(f, functions: Mapping[tuple[str, str], Any] = ()):
    return SearchUnpickler(f, functions).load()


def loads(b: bytes, functions: Mapping[tuple[str, str], Any] = ()):
    return SearchUnpickler(io.BytesIO(b), functions).load()
