"""Envelopes and results as data, the preflight that runs before every commitment point, and the
strict decoder receivers use.  The field rules come from ``lockstep.spec.contract``.

Preflight order (docs/domain.md §2.9): validate -> serialize_meta (canonical JSON) -> tensor_specs
(sorted by (key, index)) -> dtype_map -> materialize.  Only a ``Prepared`` (all five done) may be
put on the wire; the header is built last.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from lockstep.tracefmt.schema import canonical_json
from lockstep.spec import contract as C

from .errors import Ids, PreflightError, ValidationFailure

MAX_META_BYTES = 1 << 20
PREFLIGHT_STEPS = ("validate", "serialize_meta", "tensor_specs", "dtype_map", "materialize")

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "int64": torch.int64}
_KNOWN_ENVELOPE_META = {f.name for f in C.ENVELOPE_FIELDS if f.kind != "tensor"} | {
    "base_seed", "tp_plan", "prompt_id", "context_frames"}
_KNOWN_RESULT_META = {f.name for f in C.RESULT_FIELDS if f.kind != "tensor"} | set(C.RESULT_OPTIONAL_FIELDS)


def dtype_name(dt: torch.dtype) -> str:
    return str(dt).replace("torch.", "")


def dtype_from_name(name: str, field_name: str = "?") -> torch.dtype:
    if name not in C.WIRE_DTYPES or name not in _DTYPES:
        raise ValueError(f"unsupported dtype {name!r} for field {field_name}; allowed: {sorted(C.WIRE_DTYPES)}")
    return _DTYPES[name]


@dataclass
class Message:
    """An envelope (kind="envelope") or a result (kind="result"): scalar meta + top-level tensors."""

    kind: str
    meta: dict[str, Any]
    tensors: dict[str, Any] = field(default_factory=dict)  # key -> Tensor | list[Tensor]

    @property
    def action(self) -> C.Action:
        return C.Action(self.meta["action"]) if self.kind == "envelope" else (
            C.Action.INFER if self.meta["ok"] else C.Action.ERROR)

    @property
    def ids(self) -> Ids:
        return Ids(self.meta.get("call_id", -1), self.meta.get("chunk_index", -1), self.meta.get("cache_epoch", -1))

    def header_values(self) -> list[int]:
        m = self.meta
        return [int(m["call_id"]), int(m.get("chunk_index", -1)), int(m.get("control_epoch", 0)),
                int(m["cache_epoch"]), int(self.action)]


@dataclass
class Prepared:
    """A message that passed preflight: exactly what goes on the wire, in wire order."""

    msg: Message
    header: torch.Tensor            # int64[5]
    meta_bytes: torch.Tensor        # uint8[n]
    specs: list[C.TensorSpec]
    tensors: list[torch.Tensor]     # in spec order

    @property
    def action(self) -> C.Action:
        return self.msg.action

    def summary(self) -> dict:
        return {"n_specs": len(self.specs), "meta_bytes": int(self.meta_bytes.numel()),
                "specs": [[s.key, s.index, s.dtype, list(s.shape)] for s in self.specs]}


def describe_tensors(tensors: dict[str, Any]) -> list[C.TensorSpec]:
    specs = []
    for key, v in tensors.items():
        items = v if isinstance(v, (list, tuple)) else [v]
        for i, t in enumerate(items):
            if t is None:
                continue
            specs.append(C.TensorSpec(key, i, dtype_name(t.dtype), tuple(int(d) for d in t.shape)))
    return specs


def _find_unserializable(obj: Any, path: str) -> str | None:
    if obj is None or isinstance(obj, (bool, int, str)):
        return None
    if isinstance(obj, float):
        return None if math.isfinite(obj) else path
    if isinstance(obj, (list, tuple)):
        for i, x in enumerate(obj):
            p = _find_unserializable(x, f"{path}[{i}]")
            if p:
                return p
        return None
    if isinstance(obj, dict):
        for k, x in obj.items():
            if not isinstance(k, str):
                return f"{path}.{k!r}"
            p = _find_unserializable(x, f"{path}.{k}")
            if p:
                return p
        return None
    return path  # a tensor, a callable, a device ...: not plain data


def preflight(msg: Message, device: torch.device, *, ids: Ids, rank: int, group: str,
              skip: frozenset[str] = frozenset()) -> Prepared:
    """Run the five preflight steps; raise PreflightError(step, field) before anything is sent.
    ``skip`` removes steps (only the unsafe variants use it)."""
    kw = {"rank": rank, "group": group, "ids": ids}
    specs_desc = describe_tensors(msg.tensors)
    # 1. validate
    if "validate" not in skip:
        try:
            if msg.kind == "envelope":
                C.validate_envelope(msg.meta, C.sort_tensor_specs(specs_desc))
            else:
                C.validate_result(msg.meta, C.sort_tensor_specs(specs_desc))
        except C.ContractError as e:
            raise PreflightError(str(e), step="validate", field=e.field, **kw) from None
    # 2. serialize meta (canonical JSON; nested tensors, callables, NaN are rejected with their path)
    bad = _find_unserializable(msg.meta, "meta")
    if bad:
        raise PreflightError(f"value at {bad} is not plain data (ints, floats, bools, strings, lists, dicts)",
                             step="serialize_meta", field=bad, **kw)
    # 3. tensor specs, sorted by (key, index)
    specs = C.sort_tensor_specs(specs_desc)
    if len({(s.key, s.index) for s in specs}) != len(specs):
        raise PreflightError("duplicate (key, index) in tensor_specs", step="tensor_specs", field="tensor_specs", **kw)
    # 4. dtype map and shapes
    dts = []
    for s in specs:
        try:
            dts.append(dtype_from_name(s.dtype, s.key))
        except ValueError as e:
            raise PreflightError(str(e), step="dtype_map", field=s.key, **kw) from None
        if any(d < 0 for d in s.shape):
            raise PreflightError(f"negative dimension in {s.shape}", step="dtype_map", field=s.key, **kw)
    payload = {"meta": msg.meta, "tensor_specs": [[s.key, s.index, s.dtype, list(s.shape)] for s in specs]}
    try:
        raw = canonical_json(payload).encode()
    except (TypeError, ValueError) as e:
        raise PreflightError(str(e), step="serialize_meta", field="meta", **kw) from None
    if len(raw) > MAX_META_BYTES:
        raise PreflightError(f"{len(raw)} bytes > {MAX_META_BYTES}", step="serialize_meta", field="meta", **kw)
    # 5. materialize: device, dtype, contiguous, finite
    out = []
    for s, dt in zip(specs, dts):
        v = msg.tensors[s.key]
        t = (v[s.index] if isinstance(v, (list, tuple)) else v).detach().to(device=device, dtype=dt).contiguous()
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise PreflightError("non-finite values", step="materialize", field=s.key, **kw)
        out.append(t)
    header = torch.tensor(msg.header_values(), dtype=torch.int64, device=device)
    meta_bytes = torch.frombuffer(bytearray(raw), dtype=torch.uint8).to(device)
    return Prepared(msg, header, meta_bytes, specs, out)


def bare_header(action: C.Action, call_id: int, chunk_index: int, cache_epoch: int, device,
                control_epoch: int = 0) -> torch.Tensor:
    return torch.tensor([call_id, chunk_index, control_epoch, cache_epoch, int(action)], dtype=torch.int64,
                        device=device)


def parse_header(h: torch.Tensor) -> tuple[C.Action, Ids, int]:
    vals = [int(x) for x in h.cpu().tolist()]
    call_id, chunk_index, control_epoch, cache_epoch, action = vals
    try:
        act = C.Action(action)
    except ValueError:
        raise ValueError(f"unknown action code {action} in header {vals}") from None
    return act, Ids(call_id, chunk_index, cache_epoch), control_epoch


def decode_meta(raw: bytes, kind: str, *, ids: Ids, rank: int, group: str) -> tuple[dict, list[C.TensorSpec]]:
    """Strict, pickle-free decoding of the meta bytes.  Unknown meta keys are dropped (a newer
    peer may add fields: filter to the known ones, DR-OVL RF-4)."""
    kw = {"rank": rank, "group": group, "ids": ids}
    try:
        payload = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValidationFailure(f"meta is not canonical JSON: {e}", field="meta", **kw) from None
    if not isinstance(payload, dict) or set(payload) != {"meta", "tensor_specs"}:
        raise ValidationFailure("meta must be an object with exactly meta and tensor_specs", field="meta", **kw)
    meta, raw_specs = payload["meta"], payload["tensor_specs"]
    if not isinstance(meta, dict) or not isinstance(raw_specs, list):
        raise ValidationFailure("malformed meta", field="meta", **kw)
    specs = []
    for e in raw_specs:
        ok = (isinstance(e, list) and len(e) == 4 and isinstance(e[0], str) and isinstance(e[1], int)
              and isinstance(e[2], str) and isinstance(e[3], list) and all(isinstance(d, int) and d >= 0 for d in e[3]))
        if not ok:
            raise ValidationFailure(f"malformed tensor spec {e!r}", field="tensor_specs", **kw)
        if e[2] not in C.WIRE_DTYPES:
            raise ValidationFailure(f"unsupported dtype {e[2]!r}", field=e[0], **kw)
        specs.append(C.TensorSpec(e[0], e[1], e[2], tuple(e[3])))
    if specs != C.sort_tensor_specs(specs):
        raise ValidationFailure("tensor_specs not sorted by (key, index)", field="tensor_specs", **kw)
    known = _KNOWN_ENVELOPE_META if kind == "envelope" else _KNOWN_RESULT_META
    return {k: v for k, v in meta.items() if k in known}, specs


def assemble(kind: str, meta: dict, specs: list[C.TensorSpec], tensors: list[torch.Tensor]) -> Message:
    out: dict[str, Any] = {}
    for s, t in zip(specs, tensors):
        if s.index == 0 and not any(o.key == s.key and o.index > 0 for o in specs):
            out[s.key] = t
        else:
            out.setdefault(s.key, []).append(t)
    return Message(kind, meta, out)


def validate_received(msg: Message, *, rank: int, group: str) -> None:
    specs = describe_tensors(msg.tensors)
    try:
        if msg.kind == "envelope":
            C.validate_envelope(msg.meta, C.sort_tensor_specs(specs))
        else:
            C.validate_result(msg.meta, C.sort_tensor_specs(specs))
    except C.ContractError as e:
        raise ValidationFailure(str(e), field=e.field, rank=rank, group=group, ids=msg.ids) from None
