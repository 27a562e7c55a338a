"""Run configuration: one frozen record, identical on every rank (it is what the parity handshake
compares), with the ``-p key=value`` parameter table the CLI exposes.  No torch here."""
from __future__ import annotations

import math

import hashlib
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from lockstep.tracefmt.schema import canonical_json

TOPOLOGIES = ("tp", "pp0", "pp1")
BACKENDS = ("gloo", "nccl")
COMPILE_BACKENDS = ("aot_eager", "inductor", "eager")


MAX_WORLD = 64  # ranks of one run: all start on this machine (the fork launcher, or torchrun --standalone)
MAX_MODEL_BYTES = 256 << 20  # the tiny generator's weights per rank


@dataclass(frozen=True)
class ModelConfig:
    dim: int = 32
    heads: int = 4
    blocks: int = 2
    ffn_mult: int = 2
    frames_per_chunk: int = 2       # latent frames per chunk (num_frame_per_block)
    tokens_per_frame: int = 4       # frame_seq_length
    latent_channels: int = 8
    text_len: int = 4
    text_dim: int = 16
    context_frames: int = 2         # kv_cache_num_frames: frames a recompute re-encodes
    cache_frames: int = 4           # ring capacity in frames (>= context_frames + frames_per_chunk)
    seed: int = 1234

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    def check(self) -> None:
        weights = 4 * self.blocks * (4 + 2 * self.ffn_mult) * self.dim * self.dim  # bytes of the blocks' float32 weights
        if weights > MAX_MODEL_BYTES:
            raise ValueError(f"dim={self.dim}, blocks={self.blocks}, ffn_mult={self.ffn_mult} make {weights / 2**30:,.1f} GiB "
                             f"of weights per rank; the generator is a protocol harness, kept under "
                             f"{MAX_MODEL_BYTES >> 20} MiB (dim={self.dim} is the usual culprit)")
        if self.dim % self.heads:
            raise ValueError(f"dim={self.dim} is not divisible by heads={self.heads}")
        if self.cache_frames < self.context_frames + self.frames_per_chunk:
            raise ValueError(
                f"cache_frames={self.cache_frames} < context_frames+frames_per_chunk="
                f"{self.context_frames + self.frames_per_chunk}: a recompute chunk would not fit the ring")


def _heads_hint(model: ModelConfig, tp: int) -> str:
    """The -p values that give ``tp`` ranks whole heads: the head count rounded up to a multiple of
    ``tp``, with the head width kept (so the width, and the FFN width, split evenly too)."""
    heads = -(-model.heads // tp) * tp
    dim = model.dim if model.dim % heads == 0 else heads * model.head_dim
    return f"try -p heads={heads}" + ("" if dim == model.dim else f" -p dim={dim}")


@dataclass(frozen=True)
class RunConfig:
    topology: str = "tp"
    world: int = 2
    chunks: int = 4
    hard_cut_at: int = -1           # chunk index at which rank0 starts a new cache epoch (-1: never)
    steps: int = 4                  # num_denoise_steps
    recompute_every: int = 2        # 0: never (R1); k: every k-th chunk of an epoch except its first
    prompt_every: int = 3           # conditioning changes (reset_crossattn_cache) every k chunks; 0: never
    bias: float = 0.3               # kv_cache_attention_bias
    base_seed: int = 42
    d_in: int = 2                   # PP: envelopes in flight (send_q bound)
    d_out: int = 2                  # PP: results waiting for decode (recv_q bound)
    decode_ms: float = 0.0          # simulated Stage-0 decode time (Phase C)
    mesh_ms: float = 0.0            # simulated extra Stage-1 time per chunk (bench)
    backend: str = "gloo"
    dist_timeout_s: float = 5.0
    heartbeat_s: float = 0.5         # rank0 NOOP period while idle (0: no heartbeats)
    idle_s: float = 0.0             # rank0 idles this long after each emitted chunk (keepalive tests)
    watchdog_s: float = 8.0
    warmup_timeout_s: float = 300.0 # ranks outside the mesh wait this long for the mesh's READY (compile)
    input_digest: bool = False
    fingerprint_every: int = 0
    fault: str = ""
    fault_at: int = 1               # the chunk a fault fires on
    fault_rank: int = -1            # the rank a per-rank fault hits (-1: the last rank)
    delay_ms: float = 800.0         # om-09: how long the delayed result is held back
    unsafe: str = ""
    compile: str = ""               # "" | aot_eager | inductor | eager
    save_outputs: bool = False
    record: str = "on"              # on | alternate (bench: record even chunks only)
    tp_plan: str = "v1_generator_only"
    model: ModelConfig = field(default_factory=ModelConfig)

    # -- derived --------------------------------------------------------------------------------
    @property
    def mesh_ranks(self) -> list[int]:
        if self.topology == "tp":
            return list(range(self.world))
        return list(range(1, self.world))

    @property
    def tp_degree(self) -> int:
        return self.world if self.topology == "tp" else (1 if self.topology == "pp0" else self.world - 1)

    @property
    def target_rank(self) -> int:
        return self.fault_rank if self.fault_rank >= 0 else self.world - 1

    def with_(self, **kw: Any) -> "RunConfig":
        mkw = {k[6:]: kw.pop(k) for k in list(kw) if k.startswith("model.")}
        cfg = replace(self, **kw)
        if mkw:
            cfg = replace(cfg, model=replace(cfg.model, **mkw))
        return cfg

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "RunConfig":
        d = dict(d)
        m = ModelConfig(**d.pop("model", {}))
        return RunConfig(**d, model=m)

    def digest(self) -> str:
        return hashlib.blake2b(canonical_json(self.to_dict()).encode(), digest_size=8).hexdigest()


# ---- the -p table ----------------------------------------------------------------------------
_TOP_KEYS = {f.name for f in fields(RunConfig)} - {"model", "topology", "backend", "fault", "unsafe", "compile"}
_MODEL_KEYS = {f.name for f in fields(ModelConfig)}
PARAM_ALIASES = {"timeout": "dist_timeout_s", "depth": None}  # depth sets d_in and d_out


def param_names() -> list[str]:
    return sorted(_TOP_KEYS | set(PARAM_ALIASES) | _MODEL_KEYS)


def _coerce(name: str, raw: str, like: Any) -> Any:
    if isinstance(like, bool):
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"parameter {name}={raw!r}: expected true or false")
    if isinstance(like, int):
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"parameter {name}={raw!r}: expected an integer") from None
    if isinstance(like, float):
        try:
            val = float(raw)
        except ValueError:
            raise ValueError(f"parameter {name}={raw!r}: expected a number") from None
        if not math.isfinite(val):
            raise ValueError(f"parameter {name}={raw!r}: expected a finite number")
        return val
    return raw


def apply_params(cfg: RunConfig, raw: dict[str, str]) -> RunConfig:
    """Apply ``-p key=value`` pairs; ValueError names the bad key and lists the valid ones."""
    top: dict[str, Any] = {}
    model: dict[str, Any] = {}
    for k, v in raw.items():
        if k == "depth":
            top["d_in"] = top["d_out"] = _coerce(k, v, 0)
        elif k in PARAM_ALIASES:
            top[PARAM_ALIASES[k]] = _coerce(k, v, getattr(cfg, PARAM_ALIASES[k]))
        elif k in _TOP_KEYS:
            top[k] = _coerce(k, v, getattr(cfg, k))
        elif k in _MODEL_KEYS:
            model[k] = _coerce(k, v, getattr(cfg.model, k))
        else:
            raise ValueError(f"unknown parameter {k!r}; valid parameters: {', '.join(param_names())}")
    cfg = replace(cfg, **top)
    if model:
        cfg = replace(cfg, model=replace(cfg.model, **model))
    return cfg


def check_config(cfg: RunConfig) -> None:
    """Reject a configuration that cannot run, naming the numbers involved (ValueError)."""
    if cfg.topology not in TOPOLOGIES:
        raise ValueError(f"unknown topology {cfg.topology!r}; valid: {', '.join(TOPOLOGIES)}")
    if cfg.backend not in BACKENDS:
        raise ValueError(f"unknown backend {cfg.backend!r}; valid: {', '.join(BACKENDS)}")
    need = {"tp": 1, "pp0": 2, "pp1": 2}[cfg.topology]
    if cfg.topology == "pp0" and cfg.world != 2:
        raise ValueError(f"pp0 runs rank0 plus exactly one stage-1 rank: world must be 2, got {cfg.world}")
    if cfg.world < need:
        raise ValueError(f"topology {cfg.topology} needs world >= {need}, got {cfg.world}")
    if cfg.world > MAX_WORLD:
        raise ValueError(f"world {cfg.world} is above {MAX_WORLD}: every rank runs on this machine, as a process of its "
                         f"own that imports torch (about 250 MB each)")
    if not -1 <= cfg.fault_rank < cfg.world:
        raise ValueError(f"fault_rank {cfg.fault_rank} is not a rank of this world (0..{cfg.world - 1}, or -1 for the last)")
    if not -1 <= cfg.hard_cut_at < max(cfg.chunks, 0):
        raise ValueError(f"hard_cut_at {cfg.hard_cut_at} is not a chunk of this run (chunks={cfg.chunks}: "
                         + (f"0..{cfg.chunks - 1}, or " if cfg.chunks > 0 else "") + "-1 for none)")
    cfg.model.check()
    if cfg.model.heads % cfg.tp_degree:
        raise ValueError(
            f"TP degree {cfg.tp_degree} does not divide the head count {cfg.model.heads} "
            f"(topology {cfg.topology}, world {cfg.world}); {_heads_hint(cfg.model, cfg.tp_degree)}")
    ffn = cfg.model.dim * cfg.model.ffn_mult
    if ffn % cfg.tp_degree:
        raise ValueError(f"TP degree {cfg.tp_degree} does not divide the FFN width {ffn}")
    if cfg.chunks < 0 or cfg.steps < 1:
        raise ValueError(f"chunks must be >= 0 and steps >= 1 (got chunks={cfg.chunks}, steps={cfg.steps})")
    if cfg.d_in < 1 or cfg.d_out < 1:
        raise ValueError(f"queue depths must be >= 1 (got d_in={cfg.d_in}, d_out={cfg.d_out})")
    if cfg.compile and cfg.compile not in COMPILE_BACKENDS:
        raise ValueError(f"unknown compile backend {cfg.compile!r}; valid: {', '.join(COMPILE_BACKENDS)}")
    if cfg.record not in ("on", "alternate"):
        raise ValueError(f"record must be on or alternate, got {cfg.record!r}")
    if cfg.dist_timeout_s <= 0:
        raise ValueError(f"timeout must be positive, got {cfg.dist_timeout_s}")
