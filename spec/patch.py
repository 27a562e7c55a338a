"""Planted bugs as named patches on the hardened roles.

A spec's builder writes the hardened protocol once; each planted-bug variant is a function that
edits the built roles (``Role.replace``, ``Role.remove``, ``Role.insert_after``/``insert_before``,
``Role.local``/``op`` to append), registered under the variant's name in a ``Patches`` table::

    PATCHES = Patches()

    @PATCHES("send-first")
    def send_first(draft):
        \"\"\"both ranks send before they receive\"\"\"
        draft.role("rank").replace("recv_from_peer", ...)

    def build(params, variant, backend):
        ...build the hardened roles...
        draft = PATCHES.apply(variant, Draft({"leader": L, "worker": W}, params, actors))
        return Protocol(..., actors=draft.actors, symmetric=() if draft.breaks_symmetry else ...)

A patch that names a transition or role the roles do not have is a SpecError naming the patch and
the name; so is a variant with no patch.  Transition order is kept by every edit: it decides the
order in which the checker explores successors, hence which counterexample it reports.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..model.api import SpecError
from .lang import ActorDef, Role


@dataclass
class Draft:
    """What a patch edits: the hardened protocol's roles by name, its parameters and its actors
    (a patch may append one, e.g. a second caller of the transport)."""
    roles: dict[str, Role]
    params: dict = field(default_factory=dict)
    actors: list[ActorDef] = field(default_factory=list)
    breaks_symmetry: bool = False  # set by apply from the patch's declaration

    def role(self, name: str) -> Role:
        if name not in self.roles:
            raise SpecError("roles", LookupError(f"no role {name!r}; roles: {', '.join(self.roles)}"))
        return self.roles[name]

    def __getitem__(self, name: str) -> Role:
        return self.role(name)


@dataclass(frozen=True)
class Patch:
    name: str
    fn: Callable[[Draft], Any]
    breaks_symmetry: bool = False  # the bug singles a rank out: its ranks are no longer interchangeable

    @property
    def doc(self) -> str:
        return (self.fn.__doc__ or "").strip()


class Patches:
    """A table of named patches: ``@PATCHES("name")`` registers one, ``apply`` runs one."""

    def __init__(self):
        self.table: dict[str, Patch] = {}

    def __call__(self, name: str, *, breaks_symmetry: bool = False):
        def register(fn):
            if name in self.table:
                raise ValueError(f"patch {name!r} registered twice")
            self.table[name] = Patch(name, fn, breaks_symmetry)
            return fn
        return register

    def __contains__(self, name) -> bool:
        return name in self.table

    def __iter__(self):
        return iter(self.table)

    def apply(self, variant: str | None, draft: Draft) -> Draft:
        """Run the patch named ``variant`` on ``draft`` (nothing for the hardened protocol, None)."""
        if variant is None:
            return draft
        patch = self.table.get(variant)
        if patch is None:
            raise SpecError(f"variant {variant}", LookupError(
                f"no patch named {variant!r}; patches: {', '.join(self.table) or '(none)'}"))
        try:
            patch.fn(draft)
        except SpecError as e:
            raise SpecError(f"patch {variant} ({e.where})", e.cause) from None
        draft.breaks_symmetry = patch.breaks_symmetry
        return draft


__all__ = ["Draft", "Patch", "Patches"]
