"""Launching a world: locally by fork (fast; every rank a child of this process, a hard deadline,
SIGKILL for hung ranks) or one rank under torchrun (env:// rendezvous, LOCAL_RANK).  Writes the
run directory (manifest.json + rank{N}.jsonl) and summarizes how the run ended."""
from __future__ import annotations

import json
import re
import os
import platform
import shutil
import signal
import threading
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from lockstep.model import procs
from lockstep.spec.fabric import ranks_text
from lockstep.tracefmt import schema as S

from .config import RunConfig, check_config
from .faults import check_fault_config, scenario_config
from .world import group_table, role_of

OUR_FILES = ("manifest.json", "outputs.jsonl", "summary.json", ".lockstep-ready")


class RunDirError(ValueError):
    pass


def prepare_run_dir(path: str | os.PathLike, force: bool, keep: str | os.PathLike | None = None) -> Path:
    """Refuse an existing non-empty directory unless ``force``; with ``force`` only files this tool
    writes (manifest, rank traces, outputs, logs) are replaced, nothing else is touched.  ``keep``:
    this run's Flight Recorder folder, which may be inside the trace folder and does not count."""
    d = Path(path)
    if d.exists() and not d.is_dir():
        raise RunDirError(f"trace dir {d} exists and is not a directory")
    mine = Path(keep).resolve() if keep is not None else None
    if d.exists() and any(p for p in d.iterdir() if mine is None or not (p.resolve() == mine or p.resolve() in mine.parents)):
        if not force:
            raise RunDirError(f"trace dir {d} exists and is not empty; pass --force to write into it "
                              f"(only lockstep's own files would be replaced)")
        for p in d.iterdir():
            if p.name in OUR_FILES or (p.name.startswith("rank") and p.name.endswith(".jsonl")):
                p.unlink()
        if (d / "logs").is_dir():
            shutil.rmtree(d / "logs")
    d.mkdir(parents=True, exist_ok=True)
    return d


def resolve_config(cfg: RunConfig) -> RunConfig:
    """Apply the fault scenario's overrides and reject anything that cannot run (ValueError)."""
    cfg = scenario_config(cfg)
    check_config(cfg)
    check_fault_config(cfg)
    return cfg


def manifest(cfg: RunConfig, launcher: str) -> dict:
    import torch
    from lockstep.spec import contract as C
    return {
        "schema": S.SCHEMA_VERSION, "world_size": cfg.world, "topology": cfg.topology, "backend": cfg.backend,
        "groups": group_table(cfg), "roles": {str(r): role_of(cfg, r) for r in range(cfg.world)},
        "mesh_ranks": cfg.mesh_ranks, "config": cfg.to_dict(), "config_digest": cfg.digest(),
        "fault": cfg.fault, "unsafe": cfg.unsafe, "launcher": launcher, "run_id": new_run_id(),
        "versions": {"lockstep": "0.1.0", "torch": torch.__version__, "python": platform.python_version(),
                     "envelope": C.ENVELOPE_VERSION, "trace_schema": S.SCHEMA_VERSION},
        "created": time.time(),
    }


def new_run_id() -> str:
    """A fresh id per run: every rank file's first line and every Flight Recorder dump carries it, so
    files of two runs are never mixed by conform."""
    import uuid
    return uuid.uuid4().hex[:16]


FR_PREFIX = "lockstep_fr_rank_"  # + rank: the <prefix><rank> names PyTorch's fr_trace analyzer infers


def fr_dump_name(rank: int) -> str:
    return f"{FR_PREFIX}{rank}"


def prepare_fr_dir(path: str | os.PathLike, force: bool) -> Path:
    """The Flight Recorder dump directory: refused when it holds anything unless ``force``; with
    ``force`` only earlier lockstep dumps are removed (an older run's dumps must never mix in)."""
    d = Path(path)
    if d.exists() and not d.is_dir():
        raise RunDirError(f"flight recorder dir {d} exists and is not a directory")
    if d.exists() and any(d.iterdir()):
        if not force:
            raise RunDirError(f"flight recorder dir {d} exists and is not empty; pass --force to replace "
                              f"lockstep's dumps in it (an older run's dumps would mix with this run's)")
        for p in d.iterdir():
            if p.is_file() and (p.name.startswith(FR_PREFIX) or re.fullmatch(r"rank\d+\.(pkl|json)", p.name)):
                p.unlink()
    d.mkdir(parents=True, exist_ok=True)
    return d


def write_manifest(run_dir: Path, cfg: RunConfig, launcher: str) -> None:
    (run_dir / S.MANIFEST_NAME).write_text(json.dumps(manifest(cfg, launcher), indent=1, sort_keys=True))


# ---------------------------------------------------------------- summary
@dataclass
class RankOutcome:
    rank: int
    role: str
    how: str                 # clean | exception | killed | timeout | interrupted | unknown
    message: str = ""
    exit_code: int | None = None


@dataclass
class RunSummary:
    run_dir: str
    cfg: RunConfig
    ranks: list[RankOutcome]
    emitted: list[int]
    dropped: dict[int, str]
    lost: list[int]
    wall_s: float
    deadline_hit: bool = False
    problems: list[str] = field(default_factory=list)   # signature mismatches (faults) or health problems
    stale_emitted: list[dict] = field(default_factory=list)  # STALE_EMIT evidence (unsafe om09 only)
    interrupted: str = ""    # the signal that interrupted the launcher (SIGINT, SIGTERM, SIGHUP), else ""

    @property
    def clean(self) -> bool:
        return (all(r.how == "clean" for r in self.ranks) and not self.lost and not self.deadline_hit
                and not self.interrupted)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.interrupted

    def to_dict(self) -> dict:
        return {"run_dir": self.run_dir, "topology": self.cfg.topology, "world": self.cfg.world,
                "fault": self.cfg.fault, "unsafe": self.cfg.unsafe, "chunks": self.cfg.chunks,
                "emitted": self.emitted, "dropped": {str(k): v for k, v in self.dropped.items()},
                "lost": self.lost, "wall_s": round(self.wall_s, 3), "deadline_hit": self.deadline_hit,
                "ranks": [r.__dict__ for r in self.ranks], "ok": self.ok, "problems": self.problems,
                "stale_emitted": self.stale_emitted, "interrupted": bool(self.interrupted),
                "signal": self.interrupted or None}

    def render(self) -> str:
        c = self.cfg
        lines = [f"lockstep run: topology={c.topology} world={c.world} backend={c.backend} chunks={c.chunks}"
                 + (f" fault={c.fault}" if c.fault else "") + (f" unsafe={c.unsafe}" if c.unsafe else "")
                 + f"  ({self.wall_s:.2f}s)",
                 f"  chunks emitted: {len(self.emitted)}/{c.chunks} {ranges(self.emitted)}"]
        if self.dropped:
            lines.append(f"  chunks dropped: {len(self.dropped)}")
            by_reason: dict[str, list[int]] = {}
            for k, v in sorted(self.dropped.items()):
                by_reason.setdefault(v, []).append(k)
            for v, ks in sorted(by_reason.items(), key=lambda x: x[1][0]):
                lines.append(f"    chunk{'s' if len(ks) > 1 else ''} {ranges(ks)}: {v}")
        for e in self.stale_emitted:
            lines.append(f"  STALE_EMIT: chunk {e['chunk_index']} of cache_epoch {e['cache_epoch']} emitted while the "
                         f"current epoch was {e['current_epoch']}")
        if self.lost:
            lines.append(f"  chunks unaccounted (rank0 ended without recording them): {len(self.lost)} "
                         f"[{ranges(self.lost)}]")
        lines.append("  ranks:")
        for r in self.ranks:
            msg = f": {r.message}" if r.message else ""
            lines.append(f"    rank {r.rank} ({r.role}): {r.how}{msg[:300]}")
        if self.deadline_hit:
            lines.append("  DEADLINE HIT: hung ranks were SIGKILLed")
        if self.interrupted:
            lines.append(f"  INTERRUPTED by {self.interrupted}: every rank was stopped")
        if c.fault or c.unsafe:
            lines.append("  signature: " + ("as documented" if self.ok else "MISMATCH: " + "; ".join(self.problems)))
        elif self.problems:
            lines.append("  problems: " + "; ".join(self.problems))
        lines.append(f"  traces: {self.run_dir}")
        return "\n".join(lines)


def ranges(xs: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> "0-2, 5, 7-8" (a long run's chunk lists stay one short line)."""
    out: list[str] = []
    xs = sorted(xs)
    i = 0
    while i < len(xs):
        j = i
        while j + 1 < len(xs) and xs[j + 1] == xs[j] + 1:
            j += 1
        out.append(str(xs[i]) if i == j else f"{xs[i]}-{xs[j]}")
        i = j + 1
    return ", ".join(out)


def summarize(run_dir: str | os.PathLike, cfg: RunConfig, exit_codes: dict[int, int | None], wall_s: float,
              deadline_hit: bool = False, interrupted: str = "") -> RunSummary:
    run = S.load_run(run_dir)
    outcomes = []
    for r in range(cfg.world):
        ex = run.ranks[r].exit
        code = exit_codes.get(r)
        if ex is not None:
            outcomes.append(RankOutcome(r, role_of(cfg, r), ex["how"], ex.get("message", ""), code))
        else:
            outcomes.append(RankOutcome(r, role_of(cfg, r), "unknown", "no exit event", code))
    r0 = run.ranks[0]
    emitted = [e["chunk_index"] for e in r0.of(S.CHUNK_EMITTED)]
    dropped = {e["chunk_index"]: e["reason"] for e in r0.of(S.CHUNK_DROPPED)}
    lost = [k for k in range(cfg.chunks) if k not in emitted and k not in dropped]
    s = RunSummary(str(run_dir), cfg, outcomes, emitted, dropped, lost, wall_s, deadline_hit, interrupted=interrupted)
    s.stale_emitted = [{k: e[k] for k in ("chunk_index", "cache_epoch", "current_epoch")}
                       for e in r0.of(S.CHUNK_EMITTED) if e.get("stale")]
    if not interrupted:  # an interrupted run has no documented signature to compare with
        from .signatures import check
        s.problems = check(s, run)
    return s


# ---------------------------------------------------------------- fork launcher
def default_deadline(cfg: RunConfig) -> float:
    base = 20.0 + 0.5 * cfg.chunks * (1 + cfg.decode_ms / 200 + cfg.mesh_ms / 200) + 3 * cfg.dist_timeout_s
    if cfg.compile:
        base += 120.0 if cfg.compile == "inductor" else 30.0
    return base


def preimport() -> None:
    """Import once in the parent what every child would import lazily: the first functional
    collective imports torch._dynamo (~2 s per child otherwise)."""
    import torch._dynamo  # noqa: F401
    import torch.distributed._functional_collectives  # noqa: F401


def _child(cfg: RunConfig, rank: int, init_method: str, run_dir: Path, fr_dir: str | None, pgid: int,
           parent: int) -> None:
    code = 2
    try:
        procs.join_group(pgid)
        procs.die_with_parent(parent)
        logs = run_dir / "logs"
        fd = os.open(str(logs / f"rank{rank}.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        for sig in INTERRUPT_SIGNALS:  # run_rank installs its own handlers (an interrupted rank_exit)
            signal.signal(sig, signal.SIG_DFL)
        from .rank import run_rank
        code = run_rank(cfg, rank, init_method, str(run_dir), fr_dir=fr_dir)
    except BaseException:  # noqa: BLE001
        import traceback
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


INTERRUPT_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
INTERRUPT_GRACE_S = 3.0  # after forwarding SIGTERM, how long ranks get to record their exit before SIGKILL


class _Interrupts:
    """While active (main thread only), SIGINT/SIGTERM/SIGHUP to the launcher are recorded instead of
    killing it, so it can stop its ranks and still write the summary."""

    def __init__(self):
        self.signal = ""
        self.old: dict = {}

    def __enter__(self):
        import threading
        if threading.current_thread() is threading.main_thread():
            for sig in INTERRUPT_SIGNALS:
                self.old[sig] = signal.signal(sig, self._on)
        return self

    def _on(self, signum, frame):
        if not self.signal:
            self.signal = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, h in self.old.items():
            signal.signal(sig, h)
        return False


def launch_local(cfg: RunConfig, run_dir: str | os.PathLike, *, force: bool = False, deadline_s: float | None = None,
                 fr_dir: str | None = None) -> RunSummary:
    """Fork ``cfg.world`` ranks from this process, wait for them under a hard deadline, summarize."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    cfg = resolve_config(cfg)
    if cfg.backend == "nccl":
        raise ValueError("the fork launcher is CPU/gloo only; run NCCL worlds under torchrun (one GPU per rank)")
    d = prepare_run_dir(run_dir, force)
    if fr_dir is not None:
        prepare_fr_dir(fr_dir, force)
    (d / "logs").mkdir(exist_ok=True)
    write_manifest(d, cfg, "fork")
    preimport()
    deadline_s = deadline_s if deadline_s is not None else default_deadline(cfg)
    store_dir = tempfile.mkdtemp(prefix="lockstep-store-")
    init_method = f"file://{store_dir}/store"
    t0 = time.monotonic()
    pids: dict[int, int] = {}
    codes: dict[int, int | None] = {}
    deadline_hit = False
    pgid = 0  # the ranks' own process group, led by rank 0: one killpg ends them and anything they started
    me = os.getpid()
    intr = _Interrupts().__enter__()
    try:
        for r in range(cfg.world):
            pid = os.fork()
            if pid == 0:
                _child(cfg, r, init_method, d, fr_dir, pgid, me)
            procs.place_child(pid, pgid)
            pgid = pgid or pid
            pids[pid] = r
        while len(codes) < cfg.world:
            for pid, r in list(pids.items()):
                if r in codes:
                    continue
                got, status = os.waitpid(pid, os.WNOHANG)
                if got:
                    codes[r] = os.waitstatus_to_exitcode(status)
            if len(codes) == cfg.world:
                break
            if intr.signal:
                _stop_ranks(pids, codes, pgid)
                break
            if time.monotonic() - t0 > deadline_s:
                deadline_hit = True
                for pid, r in pids.items():
                    if r not in codes:
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                for pid, r in pids.items():
                    if r not in codes:
                        _, status = os.waitpid(pid, 0)
                        codes[r] = os.waitstatus_to_exitcode(status)
                break
            time.sleep(0.01)
    except BaseException:
        procs.kill_group(pgid, signal.SIGKILL)
        for pid, r in pids.items():
            if r not in codes:
                try:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                except (ProcessLookupError, ChildProcessError):
                    pass
        raise
    finally:
        intr.__exit__(None, None, None)
        procs.kill_group(pgid, signal.SIGKILL)  # anything a rank started (compile workers) ends with the run
        shutil.rmtree(store_dir, ignore_errors=True)
    wall = time.monotonic() - t0
    for r, code in codes.items():
        if code is not None and (code < 0 or intr.signal):
            path = d / S.rank_file_name(r)
            try:
                tr = S.load_rank_trace(path, r)
                has_exit = tr.exit is not None
            except (S.TraceSchemaError, FileNotFoundError):
                has_exit = False
            if not has_exit:
                sig = -code
                if intr.signal:
                    ended = f"signal {signal.Signals(sig).name}" if sig > 0 else f"exit code {code}"
                    S.append_event(path, r, S.RANK_EXIT, how="interrupted",
                                   message=f"{intr.signal} to the launcher; the rank ended by {ended}",
                                   signal=max(sig, 0), by="launcher")
                else:
                    S.append_event(path, r, S.RANK_EXIT, how="killed",
                                   message=f"signal {signal.Signals(sig).name}" + (" (launcher deadline)" if deadline_hit else ""),
                                   signal=sig, by="launcher" if deadline_hit else "unknown")
    summary = summarize(d, cfg, codes, wall, deadline_hit, interrupted=intr.signal)
    (d / "summary.json").write_text(json.dumps(summary.to_dict(), indent=1))
    return summary


def _stop_ranks(pids: dict[int, int], codes: dict[int, int | None], pgid: int) -> None:
    """An interrupt reached the launcher: SIGTERM the ranks' group (each rank records an interrupted
    ``rank_exit`` when it gets control), SIGKILL whatever is left after the grace period, reap all."""
    procs.kill_group(pgid, signal.SIGTERM)
    end = time.monotonic() + INTERRUPT_GRACE_S
    while len(codes) < len(pids) and time.monotonic() < end:
        for pid, r in pids.items():
            if r not in codes:
                got, status = os.waitpid(pid, os.WNOHANG)
                if got:
                    codes[r] = os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    procs.kill_group(pgid, signal.SIGKILL)
    for pid, r in pids.items():
        if r not in codes:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _, status = os.waitpid(pid, 0)
            codes[r] = os.waitstatus_to_exitcode(status)


# ---------------------------------------------------------------- torchrun
def run_under_torchrun(cfg: RunConfig, run_dir: str | os.PathLike, *, force: bool = False,
                       fr_dir: str | None = None) -> int:
    """This process is one rank started by torchrun: env:// rendezvous, LOCAL_RANK, one GPU per rank
    on NCCL.  Rank 0 prepares the run directory before any rank writes (a store key gates them)."""
    from .rank import run_rank
    rank, world, local_rank = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    if world != cfg.world:
        raise ValueError(f"torchrun WORLD_SIZE={world} but -p world={cfg.world}")
    cfg = resolve_config(cfg)
    d = Path(run_dir)
    # Ranks share a filesystem here; rank 0 creates the directory, the others wait for its marker.
    marker = d / ".lockstep-ready"
    token = f"{os.environ.get('TORCHELASTIC_RUN_ID', '')}:{os.environ.get('MASTER_ADDR', '')}:{os.environ.get('MASTER_PORT', '')}"
    if rank == 0:
        prepare_run_dir(d, force)
        if fr_dir is not None:
            prepare_fr_dir(fr_dir, force)
        (d / "logs").mkdir(exist_ok=True)
        write_manifest(d, cfg, "torchrun")
        marker.write_text(token)
    else:
        t0 = time.monotonic()
        while not (marker.exists() and marker.read_text() == token):
            if time.monotonic() - t0 > START_WAIT_S + cfg.dist_timeout_s:  # rank 0's interpreter may start later
                raise RunDirError(f"rank 0 did not prepare {d}")
            time.sleep(0.05)
    preimport()  # before the rendezvous, so no rank pays the lazy dynamo import inside a collective
    arrive_together(d, rank, world, token, START_WAIT_S + cfg.dist_timeout_s)
    code = run_rank(cfg, rank, "env://", str(d), local_rank=local_rank, fr_dir=fr_dir)
    return code


START_WAIT_S = 60.0  # how long torchrun's ranks wait for each other's interpreter start before the rendezvous


def arrive_together(d: Path, rank: int, world: int, token: str, limit_s: float) -> None:
    """Wait until every rank of this torchrun world has started (imported torch): torchrun starts each
    rank as a fresh interpreter, seconds apart on a loaded machine, while the rendezvous and the first
    collectives are bounded by the run's PG timeout (2 s in tests).  A file per rank in ``logs/``,
    carrying this run's token, so an older run's files are never taken for arrivals."""
    mine = d / "logs" / f".arrived-{rank}"
    mine.write_text(token)
    t0 = time.monotonic()
    while True:
        missing = []
        for r in range(world):
            f = d / "logs" / f".arrived-{r}"
            try:
                if f.read_text() != token:
                    missing.append(r)
            except OSError:
                missing.append(r)
        if not missing:
            return
        if time.monotonic() - t0 > limit_s:
            raise RunDirError(f"{ranks_text(missing)} of the torchrun world did not start within {limit_s:g} s")
        time.sleep(0.05)


# ---------------------------------------------------------------- torchrun world (from a test or a script)
TORCHRUN_LINE = re.compile(r"lockstep run \(torchrun\): rank (\d+) .*?\(exit code (-?\d+)\)")


def torchrun_command(cfg: RunConfig, run_dir: str | os.PathLike, *, fr_dir: str | None = None,
                     params: dict[str, str] | None = None) -> list[str]:
    """The command that starts ``cfg.world`` ranks of ``lockstep run`` under torchrun on this machine
    (``--standalone``: a loopback rendezvous on a free port), whatever the backend."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
           f"--nproc-per-node={cfg.world}", "-m", "lockstep.cli.run", "--topology", cfg.topology,
           "--backend", cfg.backend, "--trace-dir", str(run_dir), "--force"]
    for k, v in (params or {}).items():
        cmd += ["-p", f"{k}={v}"]
    if "world" not in (params or {}):
        cmd += ["-p", f"world={cfg.world}"]
    if cfg.fault:
        cmd += ["--fault", cfg.fault]
    if cfg.unsafe:
        cmd += ["--unsafe", cfg.unsafe]
    if cfg.compile:
        cmd += ["--compile", cfg.compile]
    if fr_dir is not None:
        cmd += ["--flight-recorder", str(fr_dir)]
    return cmd


def _same_lockstep_path(pythonpath: str) -> str:
    """PYTHONPATH for the ranks, so that they import the lockstep this process imported (a source
    checkout put on sys.path by a conftest, say), not whichever one a fresh interpreter finds first.
    A lockstep installed in site-packages needs nothing added."""
    import site

    import lockstep

    parent = os.path.dirname(os.path.abspath(list(lockstep.__path__)[0]))
    sites = {os.path.abspath(x) for x in [*site.getsitepackages(), site.getusersitepackages()]}
    parts = [x for x in pythonpath.split(os.pathsep) if x]
    if parent in sites or parent in (os.path.abspath(x) for x in parts):
        return pythonpath
    return os.pathsep.join([parent, *parts])


def _children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (Linux /proc)."""
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            out.append(int(p.name))
    return out


def _kill_torchrun_world(proc) -> None:
    """SIGKILL a torchrun agent and its workers.  torchrun starts each worker in a session of its own
    (so killing the agent's process group leaves them running): the workers' groups are killed one
    by one (each rank and anything it started), then the agent's."""
    workers = _children(proc.pid)
    procs.kill_group(proc.pid, signal.SIGKILL)
    for w in workers:
        procs.kill_group(w, signal.SIGKILL)
        try:
            os.kill(w, signal.SIGKILL)
        except ProcessLookupError:
            pass


class _SignalsKillWorld:
    """While waiting for torchrun (main thread only): SIGTERM or SIGHUP to this process first kills the
    torchrun world (its workers run in sessions of their own and would outlive this process), and is
    then delivered again under the handler that was there before (``resend``): the default ends the
    process as the signal meant, the CLI's turns it into an interrupt."""

    SIGNALS = (signal.SIGTERM, signal.SIGHUP)

    def __init__(self, kill):
        self.kill, self.old, self.got = kill, {}, None

    def _on(self, signum, frame):
        if self.got is None:
            self.got = signum
            self.kill()

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self.old[sig] = signal.signal(sig, self._on)
        return self

    def __exit__(self, *exc):
        for sig, h in self.old.items():
            signal.signal(sig, h)
        self.old = {}

    def resend(self) -> None:
        if self.got is not None:
            signal.raise_signal(self.got)


def launch_torchrun(cfg: RunConfig, run_dir: str | os.PathLike, *, force: bool = False, deadline_s: float | None = None,
                    fr_dir: str | None = None, params: dict[str, str] | None = None,
                    env: dict[str, str] | None = None) -> RunSummary:
    """Start ``cfg.world`` ranks under torchrun (one process per rank; on NCCL one GPU per rank), wait
    for them under a hard deadline (the agent and every worker are SIGKILLed when it passes), record a
    ``killed`` exit for a rank that left none, and summarize as :func:`launch_local` does.  The same
    path for gloo and NCCL: only ``cfg.backend`` differs.  torchrun's own output (and every rank's) is
    kept in ``logs/torchrun.log``."""
    import subprocess

    cfg = resolve_config(cfg)
    d = prepare_run_dir(run_dir, force)  # refuse early; rank 0 prepares it again (with --force) for its ranks
    if fr_dir is not None:
        prepare_fr_dir(fr_dir, force)
    deadline_s = deadline_s if deadline_s is not None else default_deadline(cfg) + 20.0  # + torchrun's start
    cmd = torchrun_command(cfg, d.resolve(), fr_dir=str(Path(fr_dir).resolve()) if fr_dir is not None else None, params=params)
    full_env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), **(env or {})}
    full_env["PYTHONPATH"] = _same_lockstep_path(full_env.get("PYTHONPATH", ""))
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True)
    deadline_hit = False
    caught = _SignalsKillWorld(lambda: _kill_torchrun_world(p))
    try:
        with caught:
            out, _ = p.communicate(timeout=deadline_s)
    except subprocess.TimeoutExpired:
        deadline_hit = True
        _kill_torchrun_world(p)
        out, _ = p.communicate()
    except BaseException:
        _kill_torchrun_world(p)
        p.communicate()
        raise
    caught.resend()  # a SIGTERM/SIGHUP that came while waiting: the world is gone, now the caller's turn
    wall = time.monotonic() - t0
    text = out.decode("utf-8", "replace")
    (d / "logs").mkdir(exist_ok=True)
    (d / "logs" / "torchrun.log").write_text(text)
    codes: dict[int, int | None] = {int(r): int(c) for r, c in TORCHRUN_LINE.findall(text)}
    if not (d / S.MANIFEST_NAME).exists():
        raise RunDirError(f"torchrun exited {p.returncode} before rank 0 wrote {d / S.MANIFEST_NAME}"
                          + (" (deadline hit)" if deadline_hit else "") + ":\n" + text[-2000:])
    never: list[int] = []
    for r in range(cfg.world):
        path = d / S.rank_file_name(r)
        try:
            has_exit = S.load_rank_trace(path, r).exit is not None
        except (S.TraceSchemaError, FileNotFoundError):
            has_exit = False
        if not path.exists():
            never.append(r)
        elif not has_exit:
            S.append_event(path, r, S.RANK_EXIT, how="killed",
                           message="SIGKILL (launcher deadline)" if deadline_hit else
                           f"no exit event; torchrun exited {p.returncode}",
                           signal=int(signal.SIGKILL) if deadline_hit else 0, by="launcher" if deadline_hit else "unknown")
    if never:
        raise RunDirError(f"{ranks_text(never)} never started their trace (torchrun exited {p.returncode}"
                          + (", deadline hit: every process was killed" if deadline_hit else "") + "):\n" + text[-2000:])
    summary = summarize(d, cfg, codes, wall, deadline_hit)
    (d / "summary.json").write_text(json.dumps(summary.to_dict(), indent=1))
    return summary


# ---------------------------------------------------------------- p2p entries for Flight Recorder dumps
# Flight Recorder dtype names (what torch writes into input_dtypes)
FR_DTYPE_NAMES = {"float32": "Float", "int64": "Long", "uint8": "Byte", "bfloat16": "BFloat16", "float16": "Half",
                  "int32": "Int", "float64": "Double", "bool": "Bool", "int8": "Char", "int16": "Short"}


def fr_p2p_entries(trace_path: str | os.PathLike, rank: int, backend: str) -> list[dict]:
    """This rank's point-to-point ops as Flight Recorder entries, from its JSONL trace.  gloo's Flight
    Recorder records no p2p op, so lockstep's dump carries these beside torch's ``entries`` (under
    ``lockstep.p2p_entries``; torch's own list is left as torch wrote it).  Each is an entry in the
    format torch uses for NCCL p2p (``profiling_name`` ``gloo:send 0->1`` with group-local ranks,
    ``is_p2p``, ``p2p_seq_id`` counting the rank's p2p ops per group, sizes and dtypes), ``state``
    ``completed`` when the trace recorded its ``comm_exit ok``, else ``started`` (the op the rank was
    in when it failed or was stopped; an ``isend`` records its exit when it is waited on, so it is
    marked ``async``: its state says nothing), plus the ``tag`` and wire ``purpose`` (header,
    meta_size, meta, tensor:NAME[i]) the trace knows and Flight Recorder does not."""
    tr = S.load_rank_trace(trace_path, rank)
    groups: dict[str, list[int]] = {}
    for e in tr.of(S.STARTUP_STEP):
        if isinstance(e.get("groups"), dict):
            groups.update(e["groups"])
    out: list[dict] = []
    open_ops: dict[tuple, list[dict]] = {}
    p2p_seq: dict[str, int] = {}
    for e in tr.events:
        if e["ev"] == S.COMM_ENTER and e.get("p2p"):
            g = e["group"]
            members = groups.get(g) or []
            me = members.index(rank) if rank in members else rank
            kind = "send" if e["op"] in ("send", "isend") else "recv"
            peer = e.get("dst") if kind == "send" else e.get("src")
            name = f"{backend}:send {me}->{peer}" if kind == "send" else f"{backend}:recv {me}<-{peer}"
            p2p_seq[g] = p2p_seq.get(g, 0) + 1
            shape = [int(x) for x in e.get("shape") or []]
            dt = FR_DTYPE_NAMES.get(e.get("dtype"), str(e.get("dtype")))
            ent = {"record_id": len(out), "pg_id": 0, "process_group": [g, g], "collective_seq_id": 0,
                   "p2p_seq_id": p2p_seq[g], "op_id": len(out) + 1, "is_p2p": True, "profiling_name": name,
                   "input_sizes": [shape], "output_sizes": [shape], "input_dtypes": [dt], "output_dtypes": [dt],
                   "state": "started", "retired": False, "time_created_ns": int(e["t"] * 1e9),
                   "tag": e.get("tag"), "purpose": e.get("purpose"), "recorded_by": "lockstep"}
            if e["op"] == "isend":  # posted, completed when waited on: without a wait its state says nothing
                ent["async"] = True
            out.append(ent)
            open_ops.setdefault((e["op"], g, e["seq"]), []).append(ent)
        elif e["ev"] == S.COMM_EXIT and open_ops.get((e["op"], e["group"], e["seq"])):
            ent = open_ops[(e["op"], e["group"], e["seq"])].pop(0)
            if e.get("ok"):
                ent["state"], ent["retired"] = "completed", True
            else:
                ent["error"] = str(e.get("error", ""))[:200]
    return out
