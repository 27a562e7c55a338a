"""The catalogue of shipped specs: their parameters, variants and documented verdict classes.

Each spec module under ``spec/specs/`` defines ``SPEC = SpecInfo(...)``.  The CLI, the tests
(every variant yields its documented verdict class) and the gallery all read this one table.
"""
from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

SPEC_MODULES = ("tp", "pp0", "pp1", "kv", "pipeline")
from .fabric import PROFILES, parse_profile

BACKENDS = tuple(PROFILES)  # presets; NAME:FIELD=VALUE,... overrides a preset's fields (docs/fabric.md)


class UsageError(ValueError):
    """Bad spec, variant or parameter: exit code 2 with the valid choices listed."""


@dataclass(frozen=True)
class Param:
    default: Any
    help: str
    choices: tuple | None = None
    min: int | None = None  # bounds of an integer parameter (inclusive); outside them is a usage error
    max: int | None = None

    def range_text(self) -> str:
        if self.min is not None and self.max is not None:
            return f"{self.min}..{self.max}"
        if self.min is not None:
            return f">= {self.min}"
        return f"<= {self.max}"

    def parse(self, name: str, raw: str):
        if self.choices is not None:
            if raw not in [str(c) for c in self.choices]:
                raise UsageError(f"parameter {name}={raw!r}{did_you_mean(raw, self.choices)}: expected one of "
                                 f"{', '.join(map(str, self.choices))}")
            return type(self.default)(raw) if not isinstance(self.default, str) else raw
        if isinstance(self.default, bool):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise UsageError(f"parameter {name}={raw!r}: expected true or false")
        if isinstance(self.default, int):
            try:
                val = int(raw)
            except ValueError:
                raise UsageError(f"parameter {name}={raw!r}: expected an integer") from None
            if (self.min is not None and val < self.min) or (self.max is not None and val > self.max):
                raise UsageError(f"parameter {name}={val}: out of range, expected {self.range_text()}")
            return val
        return raw


@dataclass(frozen=True)
class Variant:
    description: str
    expected: tuple[str, ...]  # the verdict classes this planted bug may yield
    params: dict = field(default_factory=dict)  # parameter overrides that make the bug reachable
    backend: str | None = None  # the backend profile the bug is documented on, when it matters


@dataclass(frozen=True)
class SpecInfo:
    name: str
    description: str
    params: dict[str, Param]
    variants: dict[str, Variant]
    build: Callable[..., Any]  # build(params: dict, variant: str | None, backend: str) -> Model
    hardened_expected: tuple[str, ...] = ("HOLDS",)


# user specs that stand in for a shipped name in this process (``conform --spec FILE``; loading.py)
OVERRIDES: dict[str, SpecInfo] = {}


def load(name: str) -> SpecInfo:
    """A shipped spec by name, or any form spec/loading.py accepts (PATH.py[:NAME], module[:NAME],
    an entry-point name).  Raises UsageError (loading.SpecLoadError) with one line on failure."""
    if name in OVERRIDES:
        return OVERRIDES[name]
    if name not in SPEC_MODULES:
        from .loading import load_spec

        return load_spec(name)
    try:
        mod = importlib.import_module(f"lockstep.spec.specs.{name}")
    except ModuleNotFoundError as e:
        if e.name == f"lockstep.spec.specs.{name}":
            raise UsageError(f"unknown spec {name!r}{did_you_mean(name, available())}; valid specs: "
                             f"{', '.join(available())}") from None
        raise
    return mod.SPEC


def did_you_mean(word: str, choices) -> str:
    """" (did you mean 'x'?)" for the choice ``word`` most likely misspells or abbreviates, or ""."""
    choices = [str(c) for c in choices]
    starts = [c for c in choices if c.startswith(str(word))]
    near = starts if len(starts) == 1 else difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    return f" (did you mean {near[0]!r}?)" if near else ""


def available() -> list[str]:
    out = []
    for n in SPEC_MODULES:
        try:
            importlib.import_module(f"lockstep.spec.specs.{n}")
        except ModuleNotFoundError:
            continue
        out.append(n)
    return out


def pick_backend(info: SpecInfo, variant: str | None, backend: str | None) -> str:
    """An explicit backend wins; else the variant's documented backend; else gloo."""
    if backend is not None:
        return backend
    return (info.variants[variant].backend if variant in info.variants else None) or "gloo"


def resolve(name, variant: str | None, raw_params: dict[str, str], backend: str | None = "gloo"):
    """Validate user input and return (SpecInfo, params dict).  ``name`` is anything ``load`` takes, or a
    SpecInfo.  Raises UsageError naming the valid choices for an unknown variant, parameter or backend."""
    info = name if isinstance(name, SpecInfo) else load(name)
    name = info.name if isinstance(name, SpecInfo) else name
    if variant is not None and variant not in info.variants:
        raise UsageError(f"unknown variant {variant!r} of spec {name}{did_you_mean(variant, info.variants)}; valid variants: "
                         f"{', '.join(info.variants) or '(none)'}")
    if backend is not None:
        try:
            parse_profile(backend)
        except ValueError as e:
            raise UsageError(str(e)) from None
    params = {k: p.default for k, p in info.params.items()}
    if variant is not None:
        params.update(info.variants[variant].params)
    for k, raw in raw_params.items():
        if k not in info.params:
            raise UsageError(f"unknown parameter {k!r} for spec {name}{did_you_mean(k, info.params)}; valid parameters: "
                             f"{', '.join(info.params)}")
        params[k] = info.params[k].parse(k, raw)
    return info, params
