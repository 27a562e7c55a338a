"""The envelope contract, defined once for the specs and for impl/.

Everything that decides what crosses the wire lives here: the header layout, the actions, the
envelope and result field tables with their required-when rules, the generator-call formula, the
identifier monotonicity rules and rank0's result acceptance rules (docs/domain.md §2).  The specs
use these functions to drive their state machines; impl/ uses the same functions to validate real
envelopes, so a contract change is one edit.

Pure Python: no torch here.  Tensors are described by ``TensorSpec`` (key, index, dtype name, shape).
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Mapping, Sequence

ENVELOPE_VERSION = 1
RESULT_VERSION = 1


class Action(IntEnum):
    """Header actions.  ERROR is the terminal action a PP1 leader broadcasts when it rejects an
    envelope (docs/domain.md §2.6, §10.2: adding it is why the envelope version is 1 here)."""

    NOOP = 0
    INFER = 1
    SHUTDOWN = 2
    ERROR = 3


# The header is five int64 values in this order (docs/domain.md §2.1).
HEADER_FIELDS = ("call_id", "chunk_index", "control_epoch", "cache_epoch", "action")
HEADER_DTYPE = "int64"
HEADER_SHAPE = (len(HEADER_FIELDS),)

# Dtypes a tensor may have on the wire; anything else is rejected in preflight (FM-07 / OM-02).
WIRE_DTYPES = frozenset({"float32", "float16", "bfloat16", "int64"})


class ContractError(ValueError):
    """A contract rule was broken.  ``field`` names the offending field."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # int | bool | float | str | tensor
    required: str  # always | infer | recompute | never (forbidden)
    rule: str


# PPEnvelopeV1 / TP v1.1 payload, merged: the fields both control planes carry (docs/domain.md §2.2, §2.4).
ENVELOPE_FIELDS: tuple[Field, ...] = (
    Field("envelope_version", "int", "always", f"== {ENVELOPE_VERSION}; unknown versions are rejected"),
    Field("action", "int", "always", "an Action"),
    Field("call_id", "int", "always", "strictly increasing across all actions"),
    Field("chunk_index", "int", "infer", "increasing over INFER"),
    Field("cache_epoch", "int", "always", "bumped exactly on a hard cut"),
    Field("current_start_frame", "int", "infer", "source of truth for cache indexing"),
    Field("init_cache", "bool", "infer", "hard cut; True on the first chunk of an epoch"),
    Field("reset_crossattn_cache", "bool", "infer", "prompt change without a hard cut"),
    Field("kv_cache_attention_bias", "float", "infer", "identical on every rank"),
    Field("do_kv_recompute", "bool", "infer", "the mesh obeys it, never infers it"),
    Field("num_denoise_steps", "int", "infer", "== len(denoising_step_list)"),
    Field("expected_generator_calls", "int", "infer", "== (1 if do_kv_recompute else 0) + num_denoise_steps"),
    Field("latents", "tensor", "infer", "randomness carried as data"),
    Field("conditioning_embeds", "tensor", "infer", "sent every chunk"),
    Field("denoising_step_list", "tensor", "infer", "int64, length num_denoise_steps"),
    Field("context_frames", "tensor", "recompute", "required iff do_kv_recompute; no fallback"),
    Field("video", "tensor", "never", "workers never receive pixel frames"),
)

RESULT_FIELDS: tuple[Field, ...] = (
    Field("result_version", "int", "always", f"== {RESULT_VERSION}"),
    Field("call_id", "int", "always", "copied from the envelope"),
    Field("chunk_index", "int", "always", "copied from the envelope"),
    Field("cache_epoch", "int", "always", "copied from the envelope"),
    Field("ok", "bool", "always", "False carries error_message and no tensors"),
    Field("observed_generator_calls", "int", "always", "== the envelope's expected_generator_calls"),
    Field("mesh_current_start_frame", "int", "always", "cache progress sanity check"),
    Field("latents_out", "tensor", "ok", "present iff ok"),
)

# Optional result fields (not required by any rule): the reason an ok=False result carries, and the
# leader-measured durations of docs/domain.md §5.5 (no clock sync needed).
RESULT_OPTIONAL_FIELDS = ("error_message", "tB_ms", "t_mesh_idle_ms", "output_digest")

_FIELDS_BY_NAME = {f.name: f for f in ENVELOPE_FIELDS}


def expected_generator_calls(do_kv_recompute: bool, num_denoise_steps: int) -> int:
    """The generator-call plan (docs/domain.md §3.1)."""
    return (1 if do_kv_recompute else 0) + num_denoise_steps


@dataclass(frozen=True, order=True)
class TensorSpec:
    key: str
    index: int
    dtype: str
    shape: tuple[int, ...]


def sort_tensor_specs(specs: Sequence[TensorSpec]) -> list[TensorSpec]:
    """Wire order: sorted by (key, index)."""
    return sorted(specs, key=lambda s: (s.key, s.index))


def _required(field: Field, action: int, do_kv_recompute: bool) -> bool:
    if field.required == "always":
        return True
    if field.required == "infer":
        return action == Action.INFER
    if field.required == "recompute":
        return action == Action.INFER and do_kv_recompute
    return False


def validate_envelope(meta: Mapping[str, Any], tensors: Sequence[TensorSpec] = ()) -> None:
    """Check an envelope against the contract; raise ContractError naming the first bad field.

    ``meta`` holds the scalar fields; ``tensors`` the tensor specs.  Action-aware: NOOP and
    SHUTDOWN skip the INFER fields (docs/domain.md §2.4).
    """
    for name in ("envelope_version", "action", "call_id", "cache_epoch"):
        if name not in meta:
            raise ContractError(name, "required field is missing")
    if meta["envelope_version"] != ENVELOPE_VERSION:
        raise ContractError("envelope_version", f"unknown version {meta['envelope_version']!r}, expected {ENVELOPE_VERSION}")
    try:
        action = Action(meta["action"])
    except ValueError:
        raise ContractError("action", f"unknown action {meta['action']!r}") from None
    recompute = bool(meta.get("do_kv_recompute", False))
    keys = {t.key for t in tensors}
    for f in ENVELOPE_FIELDS:
        present = (f.name in keys) if f.kind == "tensor" else (f.name in meta and meta[f.name] is not None)
        if f.required == "never" and present:
            raise ContractError(f.name, f"forbidden field is present ({f.rule})")
        if _required(f, action, recompute) and not present:
            raise ContractError(f.name, f"required for {action.name}{' with recompute' if f.required == 'recompute' else ''} but missing")
        if f.required == "recompute" and present and not recompute:
            raise ContractError(f.name, "present although do_kv_recompute is False (an override must not persist)")
    for t in tensors:
        if t.dtype not in WIRE_DTYPES:
            raise ContractError(t.key, f"unsupported dtype {t.dtype!r}; allowed: {sorted(WIRE_DTYPES)}")
        if any(d < 0 for d in t.shape):
            raise ContractError(t.key, f"negative dimension in shape {t.shape}")
    if action == Action.INFER:
        steps = meta["num_denoise_steps"]
        want = expected_generator_calls(recompute, steps)
        if meta["expected_generator_calls"] != want:
            raise ContractError(
                "expected_generator_calls",
                f"{meta['expected_generator_calls']} != (1 if do_kv_recompute else 0) + num_denoise_steps = {want}",
            )
        for t in tensors:
            if t.key == "denoising_step_list" and t.shape != (steps,):
                raise ContractError("denoising_step_list", f"shape {t.shape} does not match num_denoise_steps={steps}")
    if list(tensors) != sort_tensor_specs(tensors):
        raise ContractError("tensor_specs", "not sorted by (key, index)")


def validate_result(meta: Mapping[str, Any], tensors: Sequence[TensorSpec] = ()) -> None:
    """Check a result against RESULT_FIELDS; raise ContractError naming the first bad field.
    ok=True carries latents_out; ok=False carries no tensors and an error_message (docs/domain.md §2.5)."""
    for f in RESULT_FIELDS:
        if f.kind != "tensor" and f.required == "always" and (f.name not in meta or meta[f.name] is None):
            raise ContractError(f.name, "required field is missing")
    if meta["result_version"] != RESULT_VERSION:
        raise ContractError("result_version", f"unknown version {meta['result_version']!r}, expected {RESULT_VERSION}")
    keys = {t.key for t in tensors}
    if meta["ok"]:
        if "latents_out" not in keys:
            raise ContractError("latents_out", "required when ok is True but missing")
    else:
        if keys:
            raise ContractError("tensor_specs", f"an ok=False result carries no tensors, got {sorted(keys)}")
        if not meta.get("error_message"):
            raise ContractError("error_message", "required when ok is False but missing")
    for t in tensors:
        if t.dtype not in WIRE_DTYPES:
            raise ContractError(t.key, f"unsupported dtype {t.dtype!r}; allowed: {sorted(WIRE_DTYPES)}")
        if any(d < 0 for d in t.shape):
            raise ContractError(t.key, f"negative dimension in shape {t.shape}")
    if list(tensors) != sort_tensor_specs(tensors):
        raise ContractError("tensor_specs", "not sorted by (key, index)")


class IdOrderError(ContractError):
    pass


@dataclass
class IdTracker:
    """Receiver-side identifier rules (docs/domain.md §2.7): call_id strictly increasing over all
    actions; chunk_index increasing over INFER, and it may only go back when cache_epoch bumps;
    cache_epoch never decreases.  Any violation is fatal for the receiver."""

    last_call_id: int = -1
    last_chunk_index: int = -1
    last_cache_epoch: int = -1

    def accept(self, call_id: int, chunk_index: int, cache_epoch: int, action: int) -> None:
        if call_id <= self.last_call_id:
            raise IdOrderError("call_id", f"{call_id} after {self.last_call_id}: replay or reorder")
        if cache_epoch < self.last_cache_epoch:
            raise IdOrderError("cache_epoch", f"{cache_epoch} after {self.last_cache_epoch}: epochs never go back")
        if action == Action.INFER:
            if chunk_index <= self.last_chunk_index and cache_epoch == self.last_cache_epoch:
                raise IdOrderError("chunk_index", f"{chunk_index} after {self.last_chunk_index} in epoch {cache_epoch}")
            self.last_chunk_index = chunk_index
        self.last_call_id = call_id
        self.last_cache_epoch = max(self.last_cache_epoch, cache_epoch)


def accept_result(
    *, current_epoch: int, expected_call_id: int, expected_chunk_index: int,
    call_id: int, chunk_index: int, cache_epoch: int, epoch_fence: bool = True,
) -> tuple[bool, str]:
    """Rank0's acceptance rules (docs/domain.md §2.5).  Returns (accept, reason).  A result from an
    older cache_epoch is dropped as stale; an older call_id or chunk_index is a duplicate; a result
    ahead of expectation is a protocol error (no reorder buffer).  ``epoch_fence=False`` is the
    om09 planted bug: the epoch check is skipped."""
    if epoch_fence and cache_epoch != current_epoch:
        return False, "stale_epoch"
    if call_id < expected_call_id or chunk_index < expected_chunk_index:
        return False, "duplicate"
    if call_id > expected_call_id or chunk_index > expected_chunk_index:
        return False, "ahead_of_expectation"
    return True, "accepted"


# Keys that change control flow and therefore must be identical on every rank (docs/domain.md §6.4).
# ``scope`` is "world" (every rank) or "mesh" (only ranks that run Phase B).
PARITY_KEYS: tuple[tuple[str, str], ...] = (
    ("world_size", "world"),
    ("topology", "world"),
    ("tp_plan", "world"),
    ("backend", "world"),
    ("dist_timeout_s", "world"),
    ("envelope_version", "world"),
    ("recompute_every", "mesh"),
    ("input_digest", "mesh"),
    ("compile", "mesh"),
    ("fault", "world"),
    ("unsafe", "world"),
    ("fingerprint_every", "mesh"),  # gates the shard-fingerprint all_gather (OM-12)
    ("model", "mesh"),              # generator geometry: decides every Phase-B collective's shape
)
