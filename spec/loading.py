"""Find a spec from what a user typed: a shipped name, a spec file, a module, or a registered package.

Accepted forms (every command that takes a spec uses this one resolver):

- ``tp``                      a shipped spec (``lockstep.spec.specs.tp``) or one registered by an
                              installed package through the ``lockstep.specs`` entry-point group;
- ``path/to/my_spec.py``      a spec file anywhere on disk; its module-level ``SPEC``;
- ``path/to/my_spec.py:NAME`` the same file, its ``NAME`` attribute;
- ``package.module[:NAME]``   an importable module, ``SPEC`` or ``NAME``.

The object found must be a ``SpecInfo``.  A spec file runs like a script: its own folder is put on
``sys.path`` first, so it may import helper modules that sit beside it.  Every failure (no such file,
a syntax error, an import error, an exception while the module runs, no ``SPEC``, the wrong type) is
a ``SpecLoadError``: one line naming the file (and line where known) and what was expected.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
import traceback
from pathlib import Path

from .registry import SPEC_MODULES, SpecInfo, UsageError, did_you_mean

ENTRY_POINT_GROUP = "lockstep.specs"
DEFAULT_ATTR = "SPEC"

_file_cache: dict[tuple[str, str], tuple[float, SpecInfo]] = {}
_module_of_spec: dict[int, object] = {}  # id(SpecInfo) -> the module that defined it (files loaded here)


class SpecLoadError(UsageError):
    """The spec named could not be loaded: one line, exit code 2."""


def entry_point_specs() -> dict:
    """name -> EntryPoint for every installed package that registers specs under ``lockstep.specs``."""
    from importlib.metadata import entry_points

    try:
        eps = entry_points(group=ENTRY_POINT_GROUP)
    except Exception:  # noqa: BLE001 - a broken distribution must not break the CLI
        return {}
    return {ep.name: ep for ep in eps}


def is_path_ref(ref: str) -> bool:
    target = split_ref(ref)[0]
    return target.endswith(".py") or os.sep in target or "/" in target


def split_ref(ref: str) -> tuple[str, str | None]:
    """``a/b.py:NAME`` -> (``a/b.py``, ``NAME``); a Windows drive colon is not a separator."""
    head, sep, tail = ref.rpartition(":")
    if sep and tail and tail.isidentifier() and head and not (len(head) == 1 and head.isalpha()):
        return head, tail
    return ref, None


def load_spec(ref: str) -> SpecInfo:
    """Resolve ``ref`` to a SpecInfo (see the module docstring for the forms)."""
    if not isinstance(ref, str) or not ref:
        raise SpecLoadError("expected a spec: a shipped name, PATH.py[:NAME] or package.module[:NAME]")
    if ref in SPEC_MODULES:
        return _from_module(importlib.import_module(f"lockstep.spec.specs.{ref}"), DEFAULT_ATTR, ref)
    target, attr = split_ref(ref)
    if is_path_ref(ref):
        return _from_file(Path(target), attr or DEFAULT_ATTR, ref)
    eps = entry_point_specs()
    if attr is None and target in eps:
        return _from_entry_point(eps[target])
    if "." in target or attr is not None:
        return _from_dotted(target, attr or DEFAULT_ATTR, ref)
    raise SpecLoadError(f"unknown spec {ref!r}{did_you_mean(ref, spec_names())}; valid specs: {', '.join(spec_names())} "
                        f"(or a spec file PATH.py[:NAME], or package.module[:NAME])")


def spec_names() -> list[str]:
    """Shipped specs, then those registered by installed packages."""
    from .registry import available

    return list(dict.fromkeys(available() + sorted(entry_point_specs())))


def _check(obj, where: str, attr: str) -> SpecInfo:
    if not isinstance(obj, SpecInfo):
        raise SpecLoadError(f"{where}: {attr} is a {type(obj).__name__}, expected a lockstep.spec.registry.SpecInfo")
    from .registry import Param, Variant

    for field, want, typ in (("params", "Param", Param), ("variants", "Variant", Variant)):
        d = getattr(obj, field)
        if not isinstance(d, dict) or not all(isinstance(k, str) and isinstance(v, typ) for k, v in d.items()):
            bad = next((f"{k!r}: {type(v).__name__}" for k, v in d.items() if not isinstance(v, typ)), None) \
                if isinstance(d, dict) else type(d).__name__
            raise SpecLoadError(f"{where}: {attr}.{field}: expected a dict of name -> lockstep.spec.registry.{want}, "
                                f"got {bad}")
    # (a spec's monitors may name verdicts of their own; an empty tuple would document nothing to compare with)
    documented = [(f"variants[{name!r}].expected", v.expected) for name, v in obj.variants.items()]
    for field, expected in documented + [("hardened_expected", obj.hardened_expected)]:
        if not isinstance(expected, tuple) or not expected or not all(isinstance(x, str) and x for x in expected):
            raise SpecLoadError(f"{where}: {attr}.{field}: expected a non-empty tuple of verdict names "
                                f"(e.g. ('DEADLOCK',), or ('HOLDS',) where it should hold), got {expected!r}")
    for name, p in obj.params.items():
        if p.choices and p.default not in p.choices:
            raise SpecLoadError(f"{where}: {attr}.params[{name!r}]: the default {p.default!r} is not one of its "
                                f"choices ({', '.join(map(str, p.choices))})")
    return obj


def _from_module(mod, attr: str, where: str) -> SpecInfo:
    if not hasattr(mod, attr):
        hint = "" if attr != DEFAULT_ATTR else " (define SPEC = SpecInfo(...) at module level)"
        raise SpecLoadError(f"{where}: no {attr} in module {mod.__name__}{hint}")
    return _check(getattr(mod, attr), where, attr)


def _from_entry_point(ep) -> SpecInfo:
    try:
        obj = ep.load()
    except Exception as e:  # noqa: BLE001
        raise SpecLoadError(f"spec {ep.name!r} (entry point {ep.value}): {_why(e, None)}") from None
    if hasattr(obj, DEFAULT_ATTR) and not isinstance(obj, SpecInfo):
        obj = getattr(obj, DEFAULT_ATTR)
    return _check(obj, f"spec {ep.name!r} (entry point {ep.value})", ep.attr or DEFAULT_ATTR)


def _from_dotted(modname: str, attr: str, ref: str) -> SpecInfo:
    try:
        mod = importlib.import_module(modname)
    except ModuleNotFoundError as e:
        if e.name and (modname == e.name or modname.startswith(e.name + ".")):
            raise SpecLoadError(f"unknown spec {ref!r}: no module named {e.name!r} "
                                f"(valid specs: {', '.join(spec_names())}; or a spec file PATH.py)") from None
        raise SpecLoadError(f"{ref}: {_why(e, None)}") from None
    except SyntaxError as e:
        raise SpecLoadError(_syntax(e)) from None
    except Exception as e:  # noqa: BLE001
        raise SpecLoadError(f"{ref}: {_why(e, None)}") from None
    return _from_module(mod, attr, ref)


def _from_file(path: Path, attr: str, ref: str) -> SpecInfo:
    if not path.exists():
        raise SpecLoadError(f"{path}: no such spec file")
    if path.is_dir():
        raise SpecLoadError(f"{path}: is a directory; expected a spec file PATH.py")
    path = path.resolve()
    mtime = path.stat().st_mtime
    key = (str(path), attr)
    hit = _file_cache.get(key)
    if hit is not None and hit[0] == mtime:
        return hit[1]
    dotted = _package_module(path)
    if dotted is not None:  # a module of a package (a shipped spec file): import it by its dotted name
        return _from_dotted(dotted, attr, ref)
    modname = "lockstep_user_spec_" + path.stem.replace("-", "_") + "_" + hashlib.sha1(str(path).encode()).hexdigest()[:8]
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # like a script: helper modules beside the spec file import
    try:
        spec = importlib.util.spec_from_file_location(modname, path)
        if spec is None or spec.loader is None:
            raise SpecLoadError(f"{path}: not a Python file")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[modname] = mod  # dataclasses and pickling look the module up by name
        try:
            spec.loader.exec_module(mod)
        except SyntaxError as e:
            sys.modules.pop(modname, None)
            raise SpecLoadError(_syntax(e, path)) from None
        except SpecLoadError:
            sys.modules.pop(modname, None)
            raise
        except BaseException as e:  # noqa: BLE001 - SystemExit in a spec file is its bug, not ours
            sys.modules.pop(modname, None)
            if isinstance(e, KeyboardInterrupt):
                raise
            raise SpecLoadError(f"{path}: {_why(e, path)}") from None
    except OSError as e:
        raise SpecLoadError(f"{path}: cannot read: {e.strerror or e}") from None
    info = _from_module(mod, attr, str(path))
    _file_cache[key] = (mtime, info)
    _module_of_spec[id(info)] = mod
    return info


def module_of(info: SpecInfo):
    """The module a spec was loaded from (its module-level settings, e.g. ``pytestmark``), or None."""
    mod = _module_of_spec.get(id(info))
    if mod is None:
        mod = sys.modules.get(getattr(info.build, "__module__", ""), None)
    return mod


def _package_module(path: Path) -> str | None:
    """``lockstep.spec.specs.tp`` for lockstep's own spec files (they use relative imports), else None."""
    import lockstep

    root = Path(lockstep.__file__).resolve().parent
    if root in path.parents and all((d / "__init__.py").exists() for d in path.parents if root in d.parents or d == root):
        return "lockstep." + ".".join(path.relative_to(root).with_suffix("").parts)
    return None


def _syntax(e: SyntaxError, path: Path | None = None) -> str:
    """FILE:LINE: syntax error: WHAT (a file Python cannot even tokenize, e.g. one with NUL bytes,
    comes with no line: the file alone is named)."""
    where = e.filename or (str(path) if path is not None else "the spec")
    return f"{where}{f':{e.lineno}' if e.lineno else ''}: syntax error: {e.msg}"


def _why(e: BaseException, path: Path | None) -> str:
    """``ImportError: No module named 'x' (at my_spec.py:3)``: the innermost frame in the user's file."""
    where = ""
    frames = traceback.extract_tb(e.__traceback__)
    mine = [f for f in frames if path is not None and Path(f.filename) == path] or frames[-1:]
    if mine:
        f = mine[-1]
        where = f" (at {f.filename}:{f.lineno})"
    verb = "import failed" if isinstance(e, ImportError) else "raised while loading"
    return f"{verb}: {type(e).__name__}: {e}{where}"


def build_model(info: SpecInfo, params: dict, variant: str | None, backend: str):
    """``info.build`` with any exception it raises reported as a ``SpecError`` naming the spec and the
    line of the spec's code that raised (a UsageError from build stays a usage error)."""
    from ..model.api import SpecError

    try:
        model = info.build(params, variant, backend)
    except (UsageError, SpecError):
        raise
    except Exception as e:  # noqa: BLE001
        tb = traceback.extract_tb(e.__traceback__)
        here = str(Path(__file__).resolve().parents[1])  # the lockstep package
        theirs = [f for f in tb if not f.filename.startswith("<") and not str(Path(f.filename).resolve()).startswith(here)]
        f = (theirs or tb)[-1] if tb else None  # the spec's own line that called into lockstep, where it did
        where = f" at {f.filename}:{f.lineno}" if f is not None else ""
        raise SpecError(f"{info.name} build{where}", e) from e
    if not all(callable(getattr(model, m, None)) for m in ("init_states", "successors")):
        raise SpecError(f"{info.name} build", TypeError(
            f"returned {type(model).__name__}{' (did build forget to return the Protocol?)' if model is None else ''}; "
            f"expected a model: a Protocol, or an object with init_states() and successors(state)"))
    return model


# -- conformance: a user spec that describes one of the recorded topologies ----------------------
CONFORM_TOPOLOGIES = ("tp", "pp0", "pp1")


def spec_for_conformance(ref: str | None) -> str | None:
    """``conform --spec REF``: ``auto`` and shipped names pass through; a user spec (file or module)
    replaces the shipped spec of the same name for this process, since conformance maps the recorded
    events of lockstep's own topologies (tp, pp0, pp1) onto a spec's transitions.  Returns the name the
    conformance layer uses."""
    from . import registry

    if ref is None or ref == "auto" or ref in SPEC_MODULES:
        return ref
    info = load_spec(ref)
    if info.name not in CONFORM_TOPOLOGIES:
        raise SpecLoadError(f"{ref}: conform replays runs of the {', '.join(CONFORM_TOPOLOGIES)} topologies; this spec's "
                            f"SpecInfo.name is {info.name!r}, expected one of them")
    registry.OVERRIDES[info.name] = info
    return info.name
