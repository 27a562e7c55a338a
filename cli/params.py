"""``-p NAME=VALUE`` options, parsed the same way by every subcommand."""
from __future__ import annotations

import click


def parse_params(raw: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in raw:
        if "=" not in item:
            raise click.UsageError(f"-p {item!r}: expected NAME=VALUE")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out
