"""c10d semantics, modelled once for every protocol: ops, process groups, backend profiles.

An op is what a transition issues to the fabric; the issuing process blocks until the fabric
completes it.  Collectives match per group: each member's next call is matched with the others'
next call, and a signature difference (op, group-local root, dtype, shape, reduce op) is a
COLLECTIVE_MISMATCH; for v-style (uneven) all_gather and all_to_all the split sizes each rank
declares must agree with the sizes its partners declare, or the calls mismatch too.  Because
matching is by position, a skipped collective silently pairs with the next one of the same kind,
exactly as measured on gloo (docs/platform-facts.md).  ``src``/``dst``/``root`` are always group-local ranks.

Point-to-point ops match per (src, dst, group).  A backend profile decides how (docs/fabric.md has
the one table of presets):

- ``p2p_match``: ``tag`` (a recv takes the send with its tag, in any order: gloo, MPI) or
  ``peer-fifo`` (NCCL: the ops a rank issues towards one peer are served in the order issued, tags
  ignored; ops towards different peers are independent);
- ``eager_below``: a send of fewer bytes than this completes without waiting for the recv (the
  message is buffered by the fabric until the recv takes it); 0 means every send is a rendezvous;
- ``gone_peer``: what an op whose partner's process is gone (crashed, failed, exited) sees:
  ``immediate`` (an error at once, gloo), ``timeout`` (an error once the PG timeout fires; a step
  enabled only when nothing else can happen), ``never`` (it blocks for ever);
- ``finished_peer``: a partner that returned from its program (DONE) is ``gone`` (its process exits
  and closes its connections: treated as a gone process) or ``alive`` (it lingers, e.g. in
  MPI_Finalize or with an undestroyed communicator: its partners hang as on an idle rank).

A partner that is alive but never calls (it moved on, idles, or is wedged) is never detected by any
backend before the PG timeout, which lockstep counts as a hang, not as a recovery.

A transition may also *post* ops without blocking (``isend``, ``irecv``, ``post`` for an
``async_op=True`` collective, ``batch_isend_irecv``) under a handle, and block later in
``wait(handle)``; posted ops take their place in the same queues as blocking ones.

Op kinds and fields are checked when a transition issues an op (``check_op``): an unknown kind or a
field its kind does not have (a root on all_reduce, a reduce op on broadcast, a tag on a collective,
an unknown reduce op) is a mistake in the spec, reported as a SpecError naming the role and
transition, never as a protocol verdict.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

ROOTED = frozenset({"broadcast", "reduce", "scatter", "gather"})
REDUCING = frozenset({"all_reduce", "reduce", "reduce_scatter"})
SPLIT = frozenset({"all_gather", "all_to_all"})  # kinds that take v-style (uneven) splits
COLLECTIVES = frozenset({"broadcast", "all_reduce", "all_gather", "barrier", "monitored_barrier",
                         "reduce_scatter", "all_to_all", "reduce", "scatter", "gather"})
P2P = frozenset({"send", "recv"})
KINDS = COLLECTIVES | P2P | {"wait"}
REDUCE_OPS = ("sum", "prod", "max", "min", "avg")
_PLAIN = frozenset({"all_gather", "all_to_all", "barrier", "monitored_barrier"})  # no root, tag, reduce op

# bytes per element of the dtypes a signature may name (for eager-send thresholds)
DTYPE_BYTES = {"bool": 1, "uint8": 1, "int8": 1, "int16": 2, "float16": 2, "bfloat16": 2, "half": 2, "int32": 4,
               "float32": 4, "float": 4, "int64": 8, "long": 8, "float64": 8, "double": 8}


class Op(NamedTuple):
    kind: str            # one of KINDS
    group: str
    peer: int = -1       # group-local: a rooted collective's root, send dst, recv src; -1 otherwise
    tag: int = 0
    sig: tuple = ()      # (dtype, shape) or any hashable signature the matched calls must share
    data: Any = None     # root's payload, a send's payload, a reduce/gather contribution, per-member chunks
    reduce: str = ""     # all_reduce, reduce, reduce_scatter: sum | prod | max | min | avg
    splits: tuple = ()   # v-style: all_gather (size, sizes), all_to_all (in_splits, out_splits); () when even

    def signature(self) -> tuple:
        return (self.kind, self.peer if self.kind in ROOTED else -1, self.sig, self.reduce)

    def short(self) -> str:
        if self.kind == "wait":
            return f"wait {self.data}"
        parts = [self.kind, f"group={self.group}"]
        if self.kind in ("broadcast", "scatter"):
            parts.append(f"src={self.peer}")
        elif self.kind in ("reduce", "gather"):
            parts.append(f"dst={self.peer}")
        elif self.kind == "send":
            parts.append(f"dst={self.peer}")
        elif self.kind == "recv":
            parts.append(f"src={self.peer}")
        if self.kind in P2P and self.tag:
            parts.append(f"tag={self.tag}")
        if self.sig:
            parts.append("sig=" + ",".join(str(x) for x in self.sig))
        if self.reduce:
            parts.append(f"op={self.reduce}")
        if self.splits:
            if self.kind == "all_gather":
                parts.append(f"size={self.splits[0]} sizes={','.join(map(str, self.splits[1]))}")
            else:
                parts.append(f"in={','.join(map(str, self.splits[0]))} out={','.join(map(str, self.splits[1]))}")
        return " ".join(parts)


# --- op constructors (what spec authors write) ------------------------------------------
def broadcast(group: str, src: int, sig: tuple, data: Any = None) -> Op:
    return Op("broadcast", group, src, 0, sig, data)


def all_reduce(group: str, sig: tuple, data: Any = 0, reduce: str = "sum") -> Op:
    return Op("all_reduce", group, -1, 0, sig, data, reduce)


def all_gather(group: str, sig: tuple, data: Any = None, size: int | None = None, sizes: tuple | None = None) -> Op:
    """Even by default; v-style with ``size`` (this rank's contribution) and ``sizes`` (what it expects from
    each member, in group-local order): the call mismatches unless every ``sizes[j]`` is member j's ``size``."""
    if (size is None) != (sizes is None):
        raise ValueError("all_gather: give both size= and sizes= for an uneven gather, or neither")
    return Op("all_gather", group, -1, 0, sig, data, "", () if size is None else (size, tuple(sizes)))


def reduce_scatter(group: str, sig: tuple, data: Any = None, reduce: str = "sum") -> Op:
    """``data``: one chunk per member (group-local order); member i gets the reduction of everyone's chunk i."""
    return Op("reduce_scatter", group, -1, 0, sig, data, reduce)


def all_to_all(group: str, sig: tuple, data: Any = None, in_splits: tuple | None = None,
               out_splits: tuple | None = None) -> Op:
    """``data``: one chunk per member; member i gets everyone's chunk i.  v-style with ``in_splits`` (what this
    rank sends to each member) and ``out_splits`` (what it expects from each): member j's ``in_splits[i]``
    must equal member i's ``out_splits[j]``."""
    if (in_splits is None) != (out_splits is None):
        raise ValueError("all_to_all: give both in_splits= and out_splits= for uneven splits, or neither")
    return Op("all_to_all", group, -1, 0, sig, data, "", () if in_splits is None else (tuple(in_splits), tuple(out_splits)))


def reduce(group: str, dst: int, sig: tuple, data: Any = 0, reduce: str = "sum") -> Op:
    """Rooted reduce: the group-local ``dst`` gets the reduction, the others get None."""
    return Op("reduce", group, dst, 0, sig, data, reduce)


def scatter(group: str, src: int, sig: tuple, data: Any = None) -> Op:
    """The group-local ``src`` passes one chunk per member as ``data``; member i gets chunk i."""
    return Op("scatter", group, src, 0, sig, data)


def gather(group: str, dst: int, sig: tuple, data: Any = None) -> Op:
    """The group-local ``dst`` gets every member's contribution (a tuple in group-local order); others None."""
    return Op("gather", group, dst, 0, sig, data)


def barrier(group: str) -> Op:
    return Op("barrier", group)


def monitored_barrier(group: str) -> Op:
    return Op("monitored_barrier", group)


def send(group: str, dst: int, sig: tuple, data: Any = None, tag: int = 0) -> Op:
    return Op("send", group, dst, tag, sig, data)


def recv(group: str, src: int, sig: tuple, tag: int = 0) -> Op:
    return Op("recv", group, src, tag, sig)


# --- non-blocking ops: posted with a handle, completed by wait(handle) --------------------------------
class Post(NamedTuple):
    """What a transition returns to issue ops without blocking: ``isend``/``irecv``, a collective with
    ``async_op=True``, or ``batch_isend_irecv``.  The thread moves on at once; ``wait(handle)`` later
    blocks until every op of the handle completed and hands its ``after`` the result (a tuple, in issue
    order, for a batch)."""
    handle: str
    ops: tuple
    batch: bool = False   # NCCL group semantics: the batch's p2p ops do not wait for one another


def post(handle: str, op: Op) -> Post:
    """Issue any op without blocking (``async_op=True``); ``wait(handle)`` completes it."""
    return Post(handle, (op,))


def isend(handle: str, group: str, dst: int, sig: tuple, data: Any = None, tag: int = 0) -> Post:
    return Post(handle, (send(group, dst, sig, data, tag),))


def irecv(handle: str, group: str, src: int, sig: tuple, tag: int = 0) -> Post:
    return Post(handle, (recv(group, src, sig, tag),))


def batch_isend_irecv(handle: str, ops) -> Post:
    """``dist.batch_isend_irecv``: p2p ops issued as one NCCL group; on peer-fifo profiles they do not
    queue behind one another (ops issued before the batch still go first)."""
    return Post(handle, tuple(ops), True)


def wait(handle: str) -> Op:
    """Block until the ops posted under ``handle`` by this thread complete (``work.wait()``)."""
    return Op("wait", "", -1, 0, (), handle)


# --- checks and data semantics ----------------------------------------------------------------
def check_op(op: Any) -> str | None:
    """Why ``op`` is not a well-formed fabric op (a spec mistake), or None."""
    if op.__class__ is Op:  # the common cases, checked fast
        kind = op.kind
        if kind in P2P:
            if op.peer.__class__ is int and not op.reduce and not op.splits and (kind == "send" or op.data is None):
                return None
        elif kind in _PLAIN:
            if op.peer == -1 and not op.tag and not op.reduce and not op.splits:
                return None
        elif kind == "broadcast" or kind == "all_reduce":
            if (op.peer.__class__ is int and not op.tag and not op.splits
                    and (op.reduce in REDUCE_OPS if kind == "all_reduce" else (not op.reduce))
                    and (kind == "broadcast" or op.peer == -1)):
                return None
    if not isinstance(op, Op):
        return f"op= must return a fabric op (fabric.broadcast, send, ...), got {type(op).__name__} {op!r:.60}"
    if op.kind == "wait":
        if not isinstance(op.data, str) or op.group or op.peer != -1 or op.tag or op.sig or op.reduce or op.splits:
            return "wait takes one handle name (fabric.wait(handle))"
        return None
    if op.kind not in KINDS:
        return f"unknown op kind {op.kind!r}; known kinds: {', '.join(sorted(KINDS))}"
    if not isinstance(op.group, str):
        return f"{op.kind}: group must be a group name, got {op.group!r}"
    if (op.kind in ROOTED or op.kind in P2P) and not isinstance(op.peer, int):
        return f"{op.kind}: the group-local {'root' if op.kind in ROOTED else 'peer'} must be an int, got {op.peer!r}"
    if op.kind not in ROOTED and op.kind not in P2P and op.peer != -1:
        return f"{op.kind} takes no root or peer (got {op.peer}); rooted kinds: {', '.join(sorted(ROOTED))}"
    if op.kind not in P2P and op.tag != 0:
        return f"{op.kind} takes no tag (got {op.tag}); only send and recv are matched by tag"
    if op.kind in REDUCING:
        if op.reduce not in REDUCE_OPS:
            return f"{op.kind}: unknown reduce op {op.reduce!r}; expected one of {', '.join(REDUCE_OPS)}"
    elif op.reduce:
        return f"{op.kind} takes no reduce op (got {op.reduce!r}); reducing kinds: {', '.join(sorted(REDUCING))}"
    if op.splits and op.kind not in SPLIT:
        return f"{op.kind} takes no splits; uneven splits exist for {', '.join(sorted(SPLIT))}"
    if op.kind == "recv" and op.data is not None:
        return "recv carries no data (the matched send's data is what the recv gets)"
    return None


def check_post(p: Post) -> str | None:
    if not isinstance(p.handle, str) or not p.handle:
        return f"a posted op needs a handle name, got {p.handle!r}"
    if not p.ops:
        return f"post {p.handle!r}: no ops"
    for op in p.ops:
        bad = check_op(op)
        if bad is not None:
            return bad
        if op.kind == "wait":
            return f"post {p.handle!r}: wait is not a posted op"
        if p.batch and op.kind not in P2P:
            return f"batch_isend_irecv {p.handle!r}: only send and recv ops may be batched, got {op.kind}"
    if not p.batch and len(p.ops) != 1:
        return f"post {p.handle!r}: one op per handle (batch_isend_irecv for several)"
    return None


def check_splits(op: Op, size: int) -> str | None:
    """Split tables must have one entry per member."""
    if not op.splits:
        return None
    table = op.splits[1] if op.kind == "all_gather" else op.splits[0] + op.splits[1]
    want = size if op.kind == "all_gather" else 2 * size
    if len(table) != want:
        return f"{op.kind}: split sizes must list one entry per member of the group of {size} (got {op.splits})"
    return None


def splits_mismatch(ops: list[Op]) -> str | None:
    """For v-style calls matched together (group-local order): where the declared sizes disagree, or None."""
    kind = ops[0].kind
    if kind not in SPLIT or not any(o.splits for o in ops):
        return None
    if not all(o.splits for o in ops):
        return "some members call the even form and some the uneven one"
    n = len(ops)
    for i, o in enumerate(ops):
        for j in range(n):
            if kind == "all_gather":
                if o.splits[1][j] != ops[j].splits[0]:
                    return f"member {i} expects {o.splits[1][j]} from member {j}, which contributes {ops[j].splits[0]}"
            elif o.splits[1][j] != ops[j].splits[0][i]:
                return f"member {i} expects {o.splits[1][j]} from member {j}, which sends it {ops[j].splits[0][i]}"
    return None


def _reduce(reduce: str, xs: list[Any]) -> Any:
    """The members' contributions reduced.  Floats are summed and multiplied in sorted order, so that the
    result does not depend on which member passed which value (float addition is not associative): the
    symmetry reduction permutes symmetric members' contributions and relies on that."""
    if any(x.__class__ is float for x in xs) and all(x.__class__ in (float, int) for x in xs):
        xs = sorted(xs)
    if reduce == "max":
        return max(xs)
    if reduce == "min":
        return min(xs)
    if reduce == "prod":
        return math.prod(xs)
    if reduce == "avg":
        return sum(xs) / len(xs)
    return sum(xs)


def combine(kind: str, reduce: str, contributions: list[Any], root: int = -1, member: int | None = None) -> Any:
    """The value a member gets back when a collective completes.  ``contributions`` are the members'
    ``data`` in group-local order; ``root`` is the group-local root of a rooted kind; ``member`` the
    group-local rank asking (kinds whose result differs per member need it; for the others it may be
    omitted)."""
    if kind == "all_gather":
        return tuple(contributions)
    if kind == "all_reduce":
        return _reduce(reduce, contributions)
    if kind == "broadcast":
        return contributions[root] if root >= 0 else None
    if kind in ("reduce", "gather"):
        if member is not None and member != root:
            return None
        return _reduce(reduce, contributions) if kind == "reduce" else tuple(contributions)
    if kind == "scatter":
        chunks = contributions[root]
        return None if chunks is None or member is None else chunks[member]
    if kind == "reduce_scatter":
        if member is None or any(c is None for c in contributions):
            return None
        return _reduce(reduce, [c[member] for c in contributions])
    if kind == "all_to_all":
        if member is None or any(c is None for c in contributions):
            return None
        return tuple(c[member] for c in contributions)
    return None


def nbytes(sig: tuple) -> int | None:
    """The size of a message whose signature is (dtype, shape), or None when it cannot be told."""
    if len(sig) < 2 or not isinstance(sig[0], str) or sig[0] not in DTYPE_BYTES:
        return None
    shape = sig[1]
    if isinstance(shape, int):
        shape = (shape,)
    if not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
        return None
    return DTYPE_BYTES[sig[0]] * math.prod(shape)


# --- backend profiles -----------------------------------------------------------------------
@dataclass(frozen=True)
class Profile:
    name: str
    p2p_match: str = "tag"          # "tag" | "peer-fifo"
    eager_below: int = 0            # sends of fewer bytes complete before the recv; 0: all rendezvous
    gone_peer: str = "immediate"    # "immediate" | "timeout" | "never"
    finished_peer: str = "gone"     # "gone" | "alive"

    def __post_init__(self):
        object.__setattr__(self, "p2p_tags", self.p2p_match == "tag")  # read on every fabric step

    def eager(self, op: Op) -> bool:
        """Whether this send completes without waiting for its recv."""
        if self.eager_below <= 0 or op.kind != "send":
            return False
        n = nbytes(op.sig)
        return n is not None and n < self.eager_below


PROFILE_FIELDS = {"p2p_match": ("tag", "peer-fifo"), "eager_below": None,
                  "gone_peer": ("immediate", "timeout", "never"), "finished_peer": ("gone", "alive")}

PROFILES = {
    "gloo": Profile("gloo", p2p_match="tag", gone_peer="immediate", finished_peer="gone"),
    "nccl": Profile("nccl", p2p_match="peer-fifo", gone_peer="never", finished_peer="gone"),
    "nccl-async": Profile("nccl-async", p2p_match="peer-fifo", gone_peer="timeout", finished_peer="gone"),
    "mpi": Profile("mpi", p2p_match="tag", gone_peer="immediate", finished_peer="alive"),
}


def parse_profile(spec: str | Profile) -> Profile:
    """A preset name, optionally with overrides: ``nccl``, ``nccl:eager_below=4096``,
    ``gloo:finished_peer=alive,p2p_match=peer-fifo``.  Raises ValueError with the valid choices."""
    if isinstance(spec, Profile):
        return spec
    name, _, rest = str(spec).partition(":")
    if name not in PROFILES:
        raise ValueError(f"unknown backend {name!r}; valid backends: {', '.join(PROFILES)}")
    prof = PROFILES[name]
    if not rest:
        return prof
    kw: dict[str, Any] = {}
    for item in rest.split(","):
        key, eq, val = item.partition("=")
        key, val = key.strip(), val.strip()
        if key not in PROFILE_FIELDS or not eq:
            raise ValueError(f"backend {spec!r}: expected FIELD=VALUE with FIELD one of {', '.join(PROFILE_FIELDS)}")
        allowed = PROFILE_FIELDS[key]
        if allowed is None:
            try:
                kw[key] = int(val)
            except ValueError:
                raise ValueError(f"backend {spec!r}: {key} expects a number of bytes, got {val!r}") from None
            if kw[key] < 0:
                raise ValueError(f"backend {spec!r}: {key} must be >= 0")
        elif val not in allowed:
            raise ValueError(f"backend {spec!r}: {key} expects one of {', '.join(allowed)}, got {val!r}")
        else:
            kw[key] = val
    return replace(prof, name=str(spec), **kw)


@dataclass(frozen=True)
class Group:
    name: str
    ranks: tuple[int, ...]  # global ranks; the group-local rank is the position

    def local(self, global_rank: int) -> int:
        return self.ranks.index(global_rank)


def rank_runs(ranks) -> str:
    """Ranks as runs of consecutive ones, in the order given: ``1-4,7`` (``0-15`` for a 16-rank group; a
    run of two stays ``0,1``)."""
    runs: list = []
    for r in ranks:
        if runs and r == runs[-1][1] + 1:
            runs[-1][1] = r
        else:
            runs.append([r, r])
    return ",".join(str(a) if a == b else f"{a},{b}" if b == a + 1 else f"{a}-{b}" for a, b in runs)


def ranks_text(ranks) -> str:
    """``rank 3``, or ``ranks 1-4,7`` (``rank_runs``)."""
    ranks = list(ranks)
    return f"rank {ranks[0]}" if len(ranks) == 1 else f"ranks {rank_runs(ranks)}"

