"""``lockstep run``: launch the real implementation (impl/) on N ranks and record traces.

Exit codes: 0 the run ended as documented (a clean run: every rank clean and every chunk emitted or
dropped with a reason; a --fault/--unsafe run: its documented signature), 1 it did not, 2 bad usage
(including a trace or Flight Recorder directory that cannot be written, or no torch installed),
130 interrupted (SIGINT/SIGTERM/SIGHUP: every rank is stopped, summary.json says ``"interrupted": true``).
Under torchrun (RANK/WORLD_SIZE/LOCAL_RANK set) this process runs one rank, prints one line about
it, and exits with that rank's code (0 clean, 2 exception, 3 timeout, 130 interrupted).  With
``--launcher torchrun`` (the default for ``--backend nccl``) this command starts torchrun itself on
this machine, one process per rank, waits under the deadline (torchrun and every rank SIGKILLed when
it passes) and prints the summary as for forked ranks (1 if the world never got every rank's trace).
"""
from __future__ import annotations

import json
import os
import sys

import click

from .params import Seconds, parse_params
from .paths import writable_dir

_FAULTS = ("om-01", "om-02", "om-03", "om-04", "om-05", "om-06", "om-07", "om-08", "om-09", "om-10", "om-11",
           "om-12", "om-13", "c-01", "c-03")
_UNSAFE = ("fm04-throw-after-header", "om07-leader-throws", "om09-no-epoch-fence", "o02-send-after-decode",
           "result-throw-after-header")
_DEFAULT_WORLD = {"tp": 2, "pp0": 2, "pp1": 3}
RUN_JSON_SCHEMA = 1  # the version of ``run --json`` (docs/json.md)
EXIT_INTERRUPTED = 130  # as `check`; see cli/interrupt.py
NO_TORCH = ("lockstep run needs PyTorch, which is not installed: pip install 'lockstep[impl]' "
            "(on CPU-only machines use PyTorch's CPU wheel index: "
            "pip install torch --index-url https://download.pytorch.org/whl/cpu)")


@click.command("run", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--topology", required=True, type=click.Choice(["tp", "pp0", "pp1"]),
              help="tp: TP v1.1 (rank0 in the mesh); pp0: rank0 + one stage-1 rank; pp1: rank0 + a TP mesh")
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE",
              help="world, chunks, hard_cut_at, steps, recompute_every, depth (d_in=d_out), d_in, d_out, timeout, "
                   "decode_ms, fault_at, fault_rank, dim, heads, blocks, ... (a wrong name lists them all)")
@click.option("--fault", type=click.Choice(_FAULTS), default=None, help="operator-matrix scenario to inject")
@click.option("--unsafe", type=click.Choice(_UNSAFE), default=None,
              help="test only: remove one guard (mirrors a spec variant)")
@click.option("--backend", type=click.Choice(["gloo", "nccl"]), default="gloo", show_default=True)
@click.option("--launcher", type=click.Choice(["auto", "fork", "torchrun"]), default="auto", show_default=True,
              help="fork: ranks forked from this process (gloo only); torchrun: this command starts "
                   "`python -m torch.distributed.run --nproc-per-node=WORLD` on this machine and waits for it under "
                   "the deadline; auto: torchrun for nccl, fork for gloo")
@click.option("--trace-dir", required=True, type=click.Path(file_okay=False), help="where manifest.json and rank*.jsonl go")
@click.option("--force", is_flag=True, help="write into a non-empty trace dir (replaces only lockstep's own files)")
@click.option("--compile", "compile_backend", is_flag=False, flag_value="aot_eager", default=None,
              type=click.Choice(["aot_eager", "inductor", "eager"]),
              help="run the generator under torch.compile (default backend aot_eager)")
@click.option("--flight-recorder", "fr_dir", type=click.Path(file_okay=False), default=None,
              help="dump each rank's Flight Recorder trace (pickle) here at exit")
@click.option("--deadline", type=Seconds(), default=None,
              help="hard wall-clock limit for the whole world (seconds, > 0)")
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON (schema: docs/json.md)")
def run(topology, params, fault, unsafe, backend, launcher, trace_dir, force, compile_backend, fr_dir, deadline, as_json):
    """Start a world of ranks (fork locally, or one rank under torchrun) and summarize how it ended.

    \b
    Exit status: 0 the run ended as documented (clean, or the --fault/--unsafe signature),
    1 it did not, 2 bad usage (options, paths, no torch), 130 interrupted (SIGINT/SIGTERM/SIGHUP;
    every rank is stopped and summary.json is still written, marked interrupted)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported (fork + OpenMP hazard)
    try:
        import torch  # noqa: F401
    except ImportError:
        raise click.UsageError(NO_TORCH) from None
    from lockstep.impl.config import RunConfig, apply_params
    from lockstep.impl.world import env_rank_info

    raw = parse_params(params)
    under_torchrun = env_rank_info() is not None
    if "world" not in raw:
        raw["world"] = os.environ["WORLD_SIZE"] if under_torchrun else str(_DEFAULT_WORLD[topology])
    try:
        cfg = apply_params(RunConfig(topology=topology, backend=backend, fault=fault or "", unsafe=unsafe or "",
                                     compile=compile_backend or ""), raw)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    if backend == "nccl":
        import torch
        if not torch.cuda.is_available() or torch.cuda.device_count() < (1 if under_torchrun else cfg.world):
            raise click.UsageError(f"--backend nccl needs one GPU per rank; this machine has "
                                   f"{torch.cuda.device_count() if torch.cuda.is_available() else 0}")
        if not under_torchrun and launcher == "fork":
            raise click.UsageError("--launcher fork is gloo only: --backend nccl runs one process per GPU under "
                                   "torchrun (--launcher torchrun, the default for nccl)")
    if launcher == "auto":
        launcher = "torchrun" if backend == "nccl" else "fork"
    from lockstep.impl.launch import RunDirError, launch_local, prepare_run_dir, resolve_config, run_under_torchrun
    try:
        resolve_config(cfg)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    if fr_dir is not None and under_torchrun:
        writable_dir(fr_dir, "--flight-recorder")
    if under_torchrun:
        try:
            code = run_under_torchrun(cfg, trace_dir, force=force, fr_dir=fr_dir)
        except (RunDirError, ValueError) as e:
            raise click.UsageError(str(e)) from None
        except OSError as e:
            raise click.UsageError(f"--trace-dir {trace_dir}: {e.strerror or e}") from None
        click.echo(torchrun_line(trace_dir, int(os.environ["RANK"]), code))
        # Hard exit: interpreter teardown would run c10d/gloo destructors, which can abort
        # (std::terminate -> SIGABRT) after an otherwise clean run (docs/domain.md §6.1/§6.2).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    # refuse early, before any fork, and leave nothing behind when refusing: the Flight Recorder
    # folder first (it may be inside the trace folder, which then holds only it)
    made_fr = fr_dir is not None and not os.path.exists(fr_dir)
    try:
        if fr_dir is not None:
            from lockstep.impl.launch import prepare_fr_dir
            writable_dir(fr_dir, "--flight-recorder")
            prepare_fr_dir(fr_dir, force)
        prepare_run_dir(trace_dir, force, keep=fr_dir)
    except (RunDirError, click.UsageError) as e:
        if made_fr:
            _remove_empty(fr_dir, trace_dir)
        raise click.UsageError(str(e)) from None
    except OSError:
        pass  # writable_dir below names the problem
    writable_dir(trace_dir, "--trace-dir")
    if launcher == "torchrun":  # this command starts the world under torchrun and waits for it
        from lockstep.impl.launch import launch_torchrun

        from .interrupt import signals_as_interrupt
        try:
            with signals_as_interrupt():
                summary = launch_torchrun(cfg, trace_dir, force=True, deadline_s=deadline, fr_dir=fr_dir, params=raw)
        except KeyboardInterrupt:  # launch_torchrun killed torchrun and every rank
            click.echo(f"lockstep run: interrupted; torchrun and every rank were killed; traces: {trace_dir}", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except RunDirError as e:  # the world did not get as far as every rank's trace
            click.echo(f"lockstep run: {e}", err=True)
            sys.exit(1)
        click.echo(json.dumps({"schema": RUN_JSON_SCHEMA, **summary.to_dict()}, indent=1) if as_json else summary.render())
        sys.exit(0 if summary.ok else 1)
    from .interrupt import signals_as_interrupt
    with signals_as_interrupt():  # before the ranks start (torch import); the launcher takes over then
        summary = launch_local(cfg, trace_dir, force=True, deadline_s=deadline, fr_dir=fr_dir)
    click.echo(json.dumps({"schema": RUN_JSON_SCHEMA, **summary.to_dict()}, indent=1) if as_json else summary.render())
    if summary.interrupted:
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(0 if summary.ok else 1)


def _remove_empty(fr_dir: str, trace_dir: str) -> None:
    """Remove the Flight Recorder folder this command made (and the empty folders above it up to the
    trace folder's parent) after a refusal: the user's tree is left as it was."""
    p = os.path.abspath(fr_dir)
    stop = os.path.dirname(os.path.abspath(trace_dir))
    while p != stop and p != os.path.dirname(p):
        try:
            os.rmdir(p)
        except OSError:
            return
        p = os.path.dirname(p)


def torchrun_line(trace_dir: str, rank: int, code: int) -> str:
    """What one torchrun rank prints when it ends: how, and (rank 0) the chunks it emitted or dropped."""
    from lockstep.conformance import schema as S
    from lockstep.impl.launch import ranges

    try:
        tr = S.load_rank_trace(os.path.join(trace_dir, S.rank_file_name(rank)), rank)
    except (OSError, S.TraceSchemaError) as e:
        return f"lockstep run (torchrun): rank {rank} exit code {code}; its trace cannot be read: {e}"
    ex = tr.exit or {}
    line = f"lockstep run (torchrun): rank {rank} ended {ex.get('how', 'without an exit event')} (exit code {code})"
    if ex.get("message"):
        line += f": {str(ex['message'])[:200]}"
    if rank == 0:
        emitted = [e["chunk_index"] for e in tr.of(S.CHUNK_EMITTED)]
        dropped = [e["chunk_index"] for e in tr.of(S.CHUNK_DROPPED)]
        line += f"; chunks emitted {len(emitted)} [{ranges(emitted)}], dropped {len(dropped)} [{ranges(dropped)}]"
    return line + f"; traces: {trace_dir}"


if __name__ == "__main__":  # torchrun -m lockstep.cli.run ...
    run()
