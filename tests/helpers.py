"""Helpers shared by the test modules (imported as ``helpers``: pyproject puts tests/ on the path).
conftest.py files hold fixtures only; a helper imported ``from conftest`` resolves to whichever of the
several conftest modules loaded first, so helpers live here."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from lockstep.conformance import schema as S


def collective_sequences(run: S.RunTrace) -> dict[str, dict[int, list[tuple]]]:
    """group -> rank -> [(seq, op, dtype, shape, src)] of collectives entered, in order."""
    out: dict[str, dict[int, list[tuple]]] = {}
    for r, tr in run.ranks.items():
        for e in tr.of(S.COMM_ENTER):
            if e.get("p2p"):
                continue
            out.setdefault(e["group"], {}).setdefault(r, []).append(
                (e["seq"], e["op"], e.get("dtype"), tuple(e.get("shape", ())), e.get("src")))
    return out


def assert_collectives_match(run: S.RunTrace) -> None:
    """Every member's k-th collective on a group has the same signature (a clean run's traces must
    be explainable by c10d matching), and the sequence numbers count 1, 2, 3 ... per group."""
    seqs = collective_sequences(run)
    for g, per_rank in seqs.items():
        members = run.manifest["groups"][g]
        lens = {r: len(per_rank.get(r, [])) for r in members}
        assert len(set(lens.values())) == 1, f"group {g}: members entered different numbers of collectives {lens}"
        ref = per_rank[members[0]]
        for r in members:
            assert per_rank[r] == ref, f"group {g}: rank {r} diverges from rank {members[0]}"
        nums = [x[0] for x in ref]
        assert nums == sorted(set(nums)), f"group {g}: sequence numbers not increasing {nums[:10]}..."
        # compiled collectives are recorded as ranges (seq_first..seq_last) on their generator call
        covered = set(nums)
        for e in run.ranks[members[0]].events:
            if "seq_first" in e and e.get("seq_first", 0) > 0 and (e["ev"] == S.STARTUP_STEP or e.get("compiled")):
                covered |= set(range(e["seq_first"], e["seq_last"] + 1))
        assert covered == set(range(1, max(covered) + 1)), f"group {g}: sequence numbers have gaps"


# ---------------------------------------------------------------- processes
def _stat(pid: str) -> tuple[str, int, int] | None:
    """(state, process group, session) of a live process, from /proc/PID/stat."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    return fields[0], int(fields[2]), int(fields[3])


def session_members(sid: int) -> list[int]:
    """Pids of the processes (zombies excluded) in session ``sid``: a command started with
    ``start_new_session=True`` and everything it started, whatever process groups they moved to."""
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            st = _stat(pid)
            if st is not None and st[2] == sid and st[0] != "Z":
                out.append(int(pid))
    return out


def alive(pid: int) -> bool:
    st = _stat(str(pid))
    return st is not None and st[0] != "Z"


def wait_until(cond, timeout: float, step: float = 0.1) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return bool(cond())


def kill_session(sid: int) -> None:
    """Last-resort cleanup after a test: SIGKILL every process left in the session."""
    for pid in session_members(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# a user spec: 1 lead and N symmetric workers that hit or miss; its invariant ("only rank 2 missed") reads
# every symmetric worker at once, and singles one rank out (test_cli.py, test_ray.py)
ONLY_RANK_2 = """
from lockstep.spec.fabric import Group
from lockstep.spec.machine import DONE, ActorDef, Protocol, Role
from lockstep.spec.registry import Param, SpecInfo


def only_rank_2_missed(world):
    ws = list(world.actors(role="worker"))
    if not all(a.state == DONE for a in ws):
        return None
    missed = [a.rank for a in ws if a.vars.missed]
    return "only rank 2 missed" if missed == [2] else None


def build(params, variant, backend):
    n = params["workers"]
    lead = Role("lead", "IDLE", {"k": 0})
    lead.local("rest", "IDLE", DONE)
    w = Role("worker", "WORK", {"missed": False})
    w.local("hit", "WORK", DONE)
    w.local("miss", "WORK", DONE, do=lambda c: c.set(missed=True))
    return Protocol("only2", {"world": Group("world", tuple(range(n + 1)))},
                    [ActorDef(0, "main", lead)] + [ActorDef(r, "main", w) for r in range(1, n + 1)],
                    invariants=[("only-rank-2", "INVARIANT", only_rank_2_missed)], symmetric=tuple(range(1, n + 1)))


SPEC = SpecInfo(name="only2", description="workers hit or miss", params={"workers": Param(5, "workers", min=2)},
                variants={}, build=build)
"""
