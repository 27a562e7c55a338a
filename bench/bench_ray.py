"""Serial search vs ``--workers N`` (forked processes) vs ``--ray`` (N Ray actors), side by side,
and a simulated two-node Ray cluster on this machine.

    python bench/bench_ray.py [SPEC] [-p NAME=VALUE ...] [--no-reduction] [--workers 2]
                              [--skip-multinode] [--multinode-only] [--json PATH]

Default: ``pp1 -p mesh=3`` with reductions.  Each engine runs the safety search once (liveness
off) in this process; the script checks that verdict, states, transitions and depth agree, and
prints the wall time of the search and its ratio to serial.  For ``--ray`` the time to start the
local Ray instance (``ray.init``) and to place the actors is printed apart: ``search`` is what
the run took after ``ray.init`` returned (actor start, model build in every actor, search, result);
``+ray.init`` is the one-off start-up of a local instance.

Multi-node: starts ``ray start --head --block`` and a second ``ray start --address ... --block``
(each 1 CPU, its own ports, in its own session), runs the search on 2 actors through
``check_ray(address=HEAD)`` and prints the partitions with the node each ran on, then stops both
nodes (SIGTERM to each ``ray start``, then any process left in their sessions, by pid).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def factory(spec, raw, reduction):
    from lockstep.cli.ray_check import SpecFactory

    return SpecFactory(spec, None, dict(raw), None, reduction)


def row_of(name, r, seconds, extra=""):
    st = r.stats
    return {"run": name, "verdict": r.verdict, "states": st.states, "transitions": st.transitions, "depth": st.depth,
            "seconds": round(seconds, 2), "note": extra}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_ip() -> str:
    try:
        import ray._private.services as services

        return services.get_node_ip_address()
    except Exception:  # noqa: BLE001
        return "127.0.0.1"


def _sessions_pids(sids: set) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[3]) in sids:  # field 6 of stat: the session id
                out.append(int(d))
        except (OSError, IndexError, ValueError):
            pass
    return out


def start_node(head: str | None, tmp: str, env: dict) -> subprocess.Popen:
    ray_bin = shutil.which("ray") or "ray"
    cmd = [ray_bin, "start", "--block", "--num-cpus", "1", "--disable-usage-stats",
           "--node-manager-port", str(free_port()), "--object-manager-port", str(free_port()),
           "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
           "--metrics-export-port", str(free_port()), "--runtime-env-agent-port", str(free_port())]
    lo = 20000 + (os.getpid() % 200) * 100 + (0 if head is None else 50)
    cmd += ["--min-worker-port", str(lo), "--max-worker-port", str(lo + 49)]
    if head is None:
        cmd += ["--head", "--port", env["_HEAD_PORT"], "--include-dashboard", "false", "--temp-dir", tmp]
    else:
        cmd += ["--address", head]
    log = open(os.path.join(tmp, f"ray-start-{'head' if head is None else 'worker'}.log"), "w")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={k: v for k, v in env.items() if k != "_HEAD_PORT"},
                            start_new_session=True)


def wait_nodes(address: str, n: int, timeout: float = 120.0) -> None:
    import ray

    t0 = time.time()
    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    try:
        while time.time() - t0 < timeout:
            if len([x for x in ray.nodes() if x["Alive"]]) >= n:
                return
            time.sleep(0.5)
        raise RuntimeError(f"only {len(ray.nodes())} of {n} Ray nodes came up in {timeout:g} s")
    finally:
        ray.shutdown()


def multinode(spec, raw, reduction) -> dict:
    from lockstep.model.checker import Explorer
    from lockstep.model.ray_search import LAST_RUN, check_ray

    tmp = tempfile.mkdtemp(prefix="lsray-", dir="/tmp")  # short: Ray's socket paths have a length limit
    port = free_port()
    # a throw-away cluster on this machine: no token authentication (Ray >= 2.5x enables it for
    # `ray start --head`; a real cluster hands its token to the driver, docs/scaling.md)
    os.environ["RAY_AUTH_MODE"] = "disabled"
    env = {**os.environ, "_HEAD_PORT": str(port), "RAY_USAGE_STATS_ENABLED": "0"}
    procs = []
    try:
        procs.append(start_node(None, tmp, env))
        head = f"{_node_ip()}:{port}"
        t0 = time.perf_counter()
        deadline = time.time() + 120
        while True:  # the head must answer before the second node joins
            try:
                with socket.create_connection((_node_ip(), port), timeout=1):
                    break
            except OSError:
                if time.time() > deadline or procs[0].poll() is not None:
                    with open(os.path.join(tmp, "ray-start-head.log")) as f:
                        log = f.read()[-2000:]
                    raise RuntimeError(f"the Ray head did not start:\n{log}")
                time.sleep(0.5)
        procs.append(start_node(head, tmp, env))
        wait_nodes(head, 2)
        up = time.perf_counter() - t0
        make = factory(spec, raw, reduction)
        serial = Explorer(make()).run()
        t1 = time.perf_counter()
        r = check_ray(make, workers=2, address=head)
        took = time.perf_counter() - t1
        same = (r.verdict, r.stats.states, r.stats.transitions, r.stats.depth) == \
            (serial.verdict, serial.stats.states, serial.stats.transitions, serial.stats.depth)
        parts = list(LAST_RUN["partitions"])
        return {"cluster_start_s": round(up, 1), "search_s": round(took, 2), "same_as_serial": same,
                "states": r.stats.states, "partitions": parts, "nodes": len({p["node"] for p in parts})}
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        sids = {p.pid for p in procs}  # each `ray start` leads its own session
        for pid in _sessions_pids(sids):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("spec", nargs="?", default="pp1")
    ap.add_argument("-p", dest="params", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--no-reduction", action="store_true")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--skip-multinode", action="store_true")
    ap.add_argument("--multinode-only", action="store_true")
    ap.add_argument("--json", dest="json_path", default=None)
    a = ap.parse_args(argv)
    raw = dict(x.split("=", 1) for x in a.params) if a.params else ({"mesh": "3"} if a.spec == "pp1" else {})
    reduction = not a.no_reduction
    label = f"{a.spec} {' '.join(f'-p {k}={v}' for k, v in raw.items())}{' --no-reduction' if a.no_reduction else ''}"
    out: dict = {"spec": label, "cores": os.cpu_count(), "load_1min": os.getloadavg()[0], "rows": []}
    print(f"# {label}; {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}", flush=True)
    if not a.multinode_only:
        import ray

        from lockstep.model import parallel
        from lockstep.model.checker import Explorer
        from lockstep.model.ray_search import check_ray

        make = factory(a.spec, raw, reduction)
        t = time.perf_counter()
        c = time.process_time()
        serial = Explorer(make()).run()
        ts = time.perf_counter() - t
        rows = [row_of("serial", serial, ts, f"CPU {time.process_time() - c:.1f} s")]
        t = time.perf_counter()
        par = parallel.check_parallel(make, None, a.workers)
        wcpu = "+".join(f"{c:.1f}" for c in parallel.LAST_RUN.get("worker_cpu_s", []))
        rows.append(row_of(f"--workers {a.workers}", par, time.perf_counter() - t, f"worker CPU {wcpu} s"))
        t = time.perf_counter()
        ray.init(num_cpus=a.workers, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        tinit = time.perf_counter() - t
        try:
            t = time.perf_counter()
            dist = check_ray(make, None, workers=a.workers)
            took = time.perf_counter() - t
            from lockstep.model.ray_search import LAST_RUN

            acpu = "+".join(f"{p['cpu_s'] or 0:.1f}" for p in LAST_RUN.get("partitions", []))
            rows.append(row_of(f"--ray ({a.workers} actors)", dist, took, f"actor CPU {acpu} s; +ray.init {tinit:.1f} s"))
        finally:
            ray.shutdown()
        key = [(r["verdict"], r["states"], r["transitions"], r["depth"]) for r in rows]
        assert all(k == key[0] for k in key), f"engines disagree: {key}"
        print(f"{'run':<18} {'verdict':<8} {'states':>10} {'transitions':>12} {'search s':>9} {'vs serial':>9}  note")
        for r in rows:
            ratio = rows[0]["seconds"] / r["seconds"] if r["seconds"] else 0
            r["speedup"] = round(ratio, 2)
            print(f"{r['run']:<18} {r['verdict']:<8} {r['states']:>10,} {r['transitions']:>12,} {r['seconds']:>9.2f} "
                  f"{ratio:>8.2f}x  {r['note']}", flush=True)
        out["rows"] = rows
    if not a.skip_multinode and not a.multinode_only:
        # a fresh driver process, as `lockstep check --ray=ADDRESS` is: connecting to a cluster from a
        # process that has already run (and shut down) a local instance fails in Ray 2.60
        # ("actor cancelled before it started running")
        cmd = [sys.executable, os.path.abspath(__file__), a.spec, *sum((["-p", p] for p in a.params), []),
               *(["--no-reduction"] if a.no_reduction else []), "--multinode-only"]
        if a.json_path:
            with open(a.json_path, "w") as f:
                json.dump(out, f, indent=1)
            cmd += ["--json", a.json_path + ".multinode.json"]
        sys.stdout.flush()
        return subprocess.call(cmd)
    if not a.skip_multinode:
        print("# simulated multi-node: ray start --head + ray start --address, 1 CPU each, 2 actors", flush=True)
        mn = multinode(a.spec, raw, reduction)
        out["multinode"] = mn
        print(f"cluster up in {mn['cluster_start_s']} s; search {mn['search_s']} s; {mn['states']:,} states; "
              f"same as serial: {mn['same_as_serial']}; partitions on {mn['nodes']} node(s)")
        for p in mn["partitions"]:
            print(f"  partition {p['actor']}: node {p['node'][:12]}  pid {p['pid']}  {p['states']:,} states  "
                  f"peak RSS {p['peak_rss_mb']:,.0f} MB  CPU {p['cpu_s'] or 0:.1f} s")
    if a.json_path:
        with open(a.json_path, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
