"""Every multi-process run ends: ``goldfish train`` and ``goldfish audit`` under torchrun (2 gloo ranks)
exit on their own, many times over, with the CPU idle or loaded; a rank whose peer stops answering
stops with an error naming itself, and torchrun ends the job."""

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from goldfish.cli import main

from test_train_formats import CHATS, TRAIN, _jsonl

RUNS = 8  # per command; the odd ones beside a process that keeps a core busy
BOUND_S = 240  # a run takes ~15-40 s here; far below this unless it hangs
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}


def _torchrun(args: list[str], script: list[str] | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ARGS under ``torchrun --standalone`` (it picks a free port itself: nothing chosen before use) in
    its own session; a run past BOUND_S is killed, group and all, and fails the test as a hang."""
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            *(script or ["-m", "goldfish.cli"]), *args]
    proc = subprocess.Popen(argv, env=env or ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=BOUND_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"hung: no exit within {BOUND_S} s\n{err[-3000:]}")
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


class _BusyCPU:
    """A process that keeps a core busy while a run under test shares the CPU with it."""

    def __enter__(self):
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])]

    def __exit__(self, *exc):
        for p in self.procs:
            p.kill()
            p.wait()


def _repeat(args_of_run) -> list[subprocess.CompletedProcess]:
    """RUNS runs of ``args_of_run(i)``, every odd one beside a busy CPU; each must end, with rc 0."""
    runs = []
    for i in range(RUNS):
        with _BusyCPU() if i % 2 else contextlib.nullcontext():
            run = _torchrun(args_of_run(i))
        assert run.returncode == 0, f"run {i}: rc {run.returncode}\n{run.stderr[-3000:]}"
        runs.append(run)
    return runs


@pytest.mark.slow
def test_torchrun_train_always_exits(tmp_path):
    data = _jsonl(tmp_path / "chats.jsonl", CHATS[:8])
    args = lambda i: [*TRAIN, "--init", "micro", "--data", data, "--out", str(tmp_path / f"out{i}"), "--max-steps", "1",
                      "--data-cache", str(tmp_path / "c")]
    first, *later = _repeat(args)
    assert first.stderr.count("cached at") == 1 and first.stderr.count("reusing the cache") == 1  # main prepares, the other loads
    assert all(r.stderr.count("reusing the cache") == 2 for r in later)
    assert all(json.loads((tmp_path / f"out{i}" / "goldfish.json").read_text())["global_steps"] == 1 for i in range(RUNS))


@pytest.mark.slow
def test_torchrun_audit_always_exits(memorized, tmp_path):
    model_dir, members, _ = memorized
    args = ["audit", "--model", str(model_dir), "--data", str(members), "--suffix-len", "16", "--prefix-len", "32",
            "--no-progress", "--device", "cpu"]
    _repeat(lambda i: [*args, "--out", str(tmp_path / f"sharded{i}")])
    assert main([*args, "--out", str(tmp_path / "single")]) == 0
    summary = lambda folder: {m: {k: v for k, v in s.items() if k != "timing_s"}  # seconds differ; every figure must not
                              for m, s in json.loads((folder / "summary.json").read_text())["models"].items()}
    for i in range(RUNS):  # sharded over 2 ranks: the same summary and rows as one process
        assert summary(tmp_path / f"sharded{i}") == summary(tmp_path / "single")
        assert len((tmp_path / f"sharded{i}" / "results.jsonl").read_text().splitlines()) == 4


@pytest.mark.slow
@pytest.mark.parametrize("where", ["train", "audit"])
def test_a_rank_whose_peer_is_stuck_stops_with_an_error_naming_it(where, memorized, tmp_path):
    if where == "train":
        data = _jsonl(tmp_path / "chats.jsonl", CHATS[:8])
        args = [*TRAIN, "--init", "micro", "--data", data, "--out", str(tmp_path / "out"), "--max-steps", "2"]
    else:
        model_dir, members, _ = memorized
        args = ["audit", "--model", str(model_dir), "--data", str(members), "--suffix-len", "8", "--prefix-len", "16",
                "--no-progress", "--device", "cpu", "--out", str(tmp_path / "a")]
    run = _torchrun([*args, "--ddp-timeout", "5"], script=[str(Path(__file__).parent / "stuck_rank.py")],
                             env={**ENV, "STUCK_AT": where})
    assert run.returncode != 0
    assert "error: rank 0 of 2: a collective with the other ranks failed" in run.stderr, run.stderr[-3000:]
    assert "--ddp-timeout" in run.stderr
