"""The production launcher: one real torchrun world (env:// rendezvous on loopback, LOCAL_RANK)."""
import os
import subprocess
import sys

import pytest

from lockstep.conformance import schema as S


@pytest.mark.multirank
@pytest.mark.slow
def test_torchrun_tp_world(tmp_path):
    d = tmp_path / "t"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc-per-node", "2",
           "-m", "lockstep.cli.run", "--topology", "tp", "-p", "chunks=3", "-p", "timeout=20", "--trace-dir", str(d)]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, 9)
        p.communicate()
        pytest.fail("torchrun world exceeded its deadline and was killed")
    if p.returncode != 0:
        logs = "".join(f"\n--- {f.name}\n" + f.read_text()[-2000:] for f in sorted(d.glob("rank*.jsonl")))
        pytest.fail(f"torchrun exit {p.returncode}\n{out.decode()[-3000:]}{logs}")
    run = S.load_run(d)
    assert run.manifest["launcher"] == "torchrun"
    assert [run.ranks[r].exit["how"] for r in (0, 1)] == ["clean", "clean"]
    assert len(run.ranks[0].of(S.CHUNK_EMITTED)) == 3
    text = out.decode()  # every rank prints one line about how it ended; rank 0 adds its chunks
    assert "lockstep run (torchrun): rank 0 ended clean (exit code 0); chunks emitted 3 [0-2]" in text, text[-2000:]
    assert "lockstep run (torchrun): rank 1 ended clean (exit code 0)" in text, text[-2000:]
