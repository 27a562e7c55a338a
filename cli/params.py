"""``-p NAME=VALUE`` options, parsed the same way by every subcommand, and shell completion of spec
names (and ``.py`` paths), ``--variant`` values and ``-p`` names for every command that takes a spec."""
from __future__ import annotations

import math
from pathlib import Path

import click


def parse_params(raw: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in raw:
        if "=" not in item:
            raise click.UsageError(f"-p {item!r}: expected NAME=VALUE")
        k, v = item.split("=", 1)
        k = k.strip()
        if k in out:
            raise click.UsageError(f"-p {k} given twice ({k}={out[k]} and {k}={v.strip()}); give it once")
        out[k] = v.strip()
    return out


class Seconds(click.FloatRange):
    """A positive, finite number of seconds (``nan`` passes a plain range check, and disables a bound)."""

    name = "seconds"

    def __init__(self):
        super().__init__(min=0, min_open=True)

    def convert(self, value, param, ctx):
        v = super().convert(value, param, ctx)
        if not math.isfinite(v):
            self.fail(f"{value!r} is not a finite number of seconds", param, ctx)
        return v


def complete_spec(ctx, param, incomplete: str):
    """Spec names (shipped and installed), folders and ``.py`` files."""
    from click.shell_completion import CompletionItem

    from ..spec.loading import spec_names

    out = [CompletionItem(n) for n in spec_names() if n.startswith(incomplete)]
    d, slash, prefix = incomplete.rpartition("/")
    base = Path(d) if d else Path("/" if slash else ".")
    lead = d + slash
    try:
        for p in sorted(base.iterdir()):
            if not p.name.startswith(prefix) or p.name.startswith((".", "__")) and not prefix.startswith("."):
                continue
            if p.is_dir():
                out.append(CompletionItem(lead + p.name + "/", type="dir"))
            elif p.suffix == ".py":
                out.append(CompletionItem(lead + p.name))
    except OSError:
        pass
    return out


def _spec_in_ctx(ctx):
    """The SpecInfo named on the command line being completed, or None."""
    from ..spec.loading import load_spec

    ref = ctx.params.get("spec")
    if ref is None:  # click's resilient completion parse may leave the argument unconsumed
        ref = next((a for a in ctx.args if not a.startswith("-")), None)
    if not ref or ref == "auto":
        return None
    try:
        return load_spec(ref)
    except Exception:  # noqa: BLE001 - completion never fails loudly
        return None


def complete_variant(ctx, param, incomplete: str):
    from click.shell_completion import CompletionItem

    info = _spec_in_ctx(ctx)
    if info is None:
        return []
    return [CompletionItem(k, help=v.description) for k, v in info.variants.items() if k.startswith(incomplete)]


def complete_param(ctx, param, incomplete: str):
    from click.shell_completion import CompletionItem

    info = _spec_in_ctx(ctx)
    if info is None:
        return []
    name, eq, _ = incomplete.partition("=")
    if eq and name in info.params:
        p = info.params[name]
        vals = [str(c) for c in p.choices] if p.choices else (["true", "false"] if isinstance(p.default, bool) else [str(p.default)])
        return [CompletionItem(f"{name}={v}") for v in vals if f"{name}={v}".startswith(incomplete)]
    return [CompletionItem(f"{k}=", help=p.help) for k, p in info.params.items() if k.startswith(incomplete)]
