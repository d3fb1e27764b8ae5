"""Fault injection on goldfish train's checkpoints: a run SIGKILLed while it saves checkpoint-10, a
resume with other settings or data (refused, or forced and recorded), --overwrite over an old run,
and a full disk during a save (simulated, and a real small tmpfs where this user may mount one)."""

import json
import logging
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from helpers import NotAllowlisted, sigkill_when_ready
from safetensors.torch import load_file

from goldfish.checkpoints import checkpoint_problem
from goldfish.cli import main

ARGS = ["train", "--init", "micro", "--batch-size", "4", "--lr", "1e-3", "--no-progress", "--seq-len", "64",
        "--data", "embedded:targets", "--logging-steps", "5"]
FULL = [*ARGS, "--max-steps", "15", "--save-steps", "5"]
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def fresh_log_handler(monkeypatch):
    """The CLI's log handler is made for the stderr of the first main() call; each test here checks its
    own stderr for tracebacks, so each gets a handler of its own (a stale one prints "Logging error")."""
    monkeypatch.setattr(logging.getLogger("goldfish"), "handlers", [])


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """An uninterrupted run of 15 steps with checkpoint-5, -10 and -15."""
    out = tmp_path_factory.mktemp("full") / "run"
    assert main([*FULL, "--out", str(out)]) == 0
    return out


def _files(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


# The child: train as goldfish train does, but write half of checkpoint-N/optimizer.pt, say so and wait to be killed.
CHILD = r"""
import io, pathlib, sys, time
import torch
from goldfish.cli import main

save = torch.save
def save_half_then_wait(obj, f, *args, **kwargs):
    if str(f).endswith(sys.argv[1]):
        buffer = io.BytesIO()
        save(obj, buffer, *args, **kwargs)
        pathlib.Path(f).write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        pathlib.Path(sys.argv[2]).touch()
        time.sleep(600)
    return save(obj, f, *args, **kwargs)
torch.save = save_half_then_wait
sys.exit(main(sys.argv[3:]))
"""


def test_a_kill_during_checkpoint_10s_save_resumes_from_checkpoint_5_to_the_same_weights(full, tmp_path, caplog):
    out, saving = tmp_path / "run", tmp_path / "saving"
    sigkill_when_ready(["-c", CHILD, "checkpoint-10/optimizer.pt", str(saving), *FULL, "--out", str(out)], saving,
                       "checkpoint-10's save")
    assert checkpoint_problem(out / "checkpoint-5") is None and checkpoint_problem(out / "checkpoint-10") is not None
    assert not (out / "goldfish.json").exists()
    with caplog.at_level(logging.INFO, logger="goldfish"):
        assert main([*FULL, "--out", str(out), "--resume"]) == 0
    assert "--resume: skipping checkpoint-10: optimizer.pt is cut short or damaged" in caplog.text
    assert f"--resume: resuming from {out / 'checkpoint-5'}" in caplog.text
    resumed = json.loads((out / "goldfish.json").read_text())["resumed"]
    assert resumed["checkpoint"] == str(out / "checkpoint-5") and not resumed["forced"]
    assert [s.split(":")[0] for s in resumed["skipped"]] == ["checkpoint-10"]
    assert checkpoint_problem(out / "checkpoint-10") is None  # saved again, whole
    a, b = load_file(full / "model.safetensors"), load_file(out / "model.safetensors")
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_a_resume_with_other_settings_or_data_is_refused_with_every_difference(full, tmp_path, capsys):
    before = _files(full)
    assert main([*FULL, "--out", str(full), "--resume", "--k", "8", "--seq-len", "128"]) == 2
    assert _error_line(capsys) == ("goldfish train: error: --resume: checkpoint-15 is another run: seq_len = 64 there, 128 "
                                   "here; k = 4 there, 8 here; pass --force to resume anyway")
    data = tmp_path / "other.jsonl"
    data.write_text(json.dumps({"text": "some other text than the run was trained on"}) + "\n")
    other = [a if a != "embedded:targets" else str(data) for a in FULL]
    assert main([*other, "--out", str(full), "--resume"]) == 2
    line = _error_line(capsys)
    assert line.startswith("goldfish train: error: --resume: checkpoint-15 is another run: the data: ") and "pass --force" in line
    assert _files(full) == before


def test_a_forced_resume_is_recorded_with_what_differed(full, tmp_path):
    out = tmp_path / "forced"
    shutil.copytree(full / "checkpoint-10", out / "checkpoint-10")
    assert main([*FULL, "--out", str(out), "--resume", "--force", "--k", "8"]) == 0
    record = json.loads((out / "goldfish.json").read_text())
    assert record["goldfish"]["k"] == 8 and record["global_steps"] == 15
    assert record["resumed"]["forced"] and record["resumed"]["differences"] == ["k = 4 there, 8 here"]
    assert json.loads((out / "checkpoint-15" / "goldfish_run.json").read_text())["settings"]["k"] == 8


def test_a_forced_resume_into_another_model_size_is_a_clear_error(full, tmp_path, capsys):
    out = tmp_path / "other-size"
    shutil.copytree(full / "checkpoint-10", out / "checkpoint-10")
    assert main([*FULL, "--out", str(out), "--resume", "--force", "--init", "tiny"]) == 2
    line = _error_line(capsys)
    assert line.startswith("goldfish train: error: --resume: the weights in checkpoint-10 do not fit this model (")
    assert "there, " in line and "another model size" in line
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-10"]


def test_an_unloadable_state_in_a_checkpoint_is_named(full, tmp_path, capsys):
    out = tmp_path / "unpicklable"
    shutil.copytree(full / "checkpoint-15", out / "checkpoint-15")
    torch.save(NotAllowlisted(state="not a tensor dict"), out / "checkpoint-15" / "optimizer.pt")
    assert main([*FULL, "--out", str(out), "--resume", str(out / "checkpoint-15")]) == 2
    assert _error_line(capsys).startswith(f"goldfish train: error: --resume {out / 'checkpoint-15'}: not a complete "
                                          "checkpoint: optimizer.pt cannot be loaded (UnpicklingError: ")


def test_overwrite_leaves_no_old_checkpoint_and_keeps_files_it_did_not_write(full, tmp_path, capsys, caplog):
    out = tmp_path / "again"
    shutil.copytree(full, out)
    short = [*ARGS, "--max-steps", "2", "--save-steps", "2", "--out", str(out)]
    assert main([*short, "--overwrite"]) == 0
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"] and len(list((out / "runs").iterdir())) == 1
    assert json.loads((out / "goldfish.json").read_text())["global_steps"] == 2
    with caplog.at_level(logging.INFO, logger="goldfish"):
        assert main([*short, "--resume"]) == 0  # continues the new run, not the old one
    assert "is complete (step 2 of 2); nothing to do" in caplog.text
    (out / "notes.txt").write_text("mine")
    assert main([*short, "--overwrite"]) == 2
    assert _error_line(capsys) == (f"goldfish train: error: --overwrite: {out} holds notes.txt, which goldfish train does not "
                                   "write; move them away or choose another --out (nothing was removed)")
    assert (out / "notes.txt").read_text() == "mine" and (out / "checkpoint-2").is_dir()


def test_a_full_disk_while_saving_a_checkpoint_is_reported_as_such(tmp_path, capsys, monkeypatch):
    """torch's zip writer after a short write, as on a full disk (see the tmpfs test for the real one)."""
    save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        if str(f).endswith("checkpoint-2/optimizer.pt"):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 2102400 vs 2102288")
        return save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    out = tmp_path / "run"
    assert main([*ARGS, "--max-steps", "2", "--save-steps", "2", "--out", str(out)]) == 2
    assert _error_line(capsys).startswith(f"goldfish train: error: no space left on device while saving checkpoint-2 in {out} (")


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of the size asked for (root only; skipped where it cannot be mounted)."""
    mounted = []

    def mount(size: str) -> Path:
        folder = tmp_path / "disk"
        folder.mkdir()
        try:
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True, capture_output=True)
        except (OSError, subprocess.CalledProcessError):
            pytest.skip("cannot mount a tmpfs here (needs root)")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.parametrize("size,stops_in", [("5m", "optimizer.pt (torch's zip writer)"), ("2m", "model.safetensors (safetensors)")])
def test_a_real_full_disk_is_reported_as_such(small_disk, capsys, size, stops_in):
    out = small_disk(size) / "run"
    assert main([*ARGS, "--max-steps", "3", "--save-steps", "3", "--report-to", "none", "--out", str(out)]) == 2, stops_in
    assert _error_line(capsys).startswith(f"goldfish train: error: no space left on device while saving checkpoint-3 in {out} (")


def test_a_full_data_cache_is_named_and_holds_no_entry(small_disk, tmp_path, capsys):
    cache = small_disk("200k") / "cache"
    out = tmp_path / "run"
    assert main([*ARGS, "--max-steps", "1", "--report-to", "none", "--data-cache", str(cache), "--out", str(out)]) == 2
    assert _error_line(capsys).startswith(f"goldfish train: error: no space left on device while preparing data for "
                                          f"the cache in {cache} (")
    assert list(cache.iterdir()) == [] and not out.exists()


# The other run: holds --out's lock as a goldfish train does while it runs, says so, and waits to be killed.
HOLD_LOCK = """
import pathlib, sys, time
from goldfish.out_folder import out_lock
with out_lock(sys.argv[1]):
    pathlib.Path(sys.argv[2]).write_text("locked")
    time.sleep(600)
"""


def test_a_second_run_into_the_same_out_is_refused_with_the_holders_pid(tmp_path, capsys):
    import os
    import signal
    import sys
    import time

    out, ready = tmp_path / "run", tmp_path / "ready"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out), str(ready)], env=env)
    try:
        deadline = time.time() + 120
        while not ready.exists() and holder.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert ready.exists(), "the holder never took the lock"
        for extra in ([], ["--overwrite"]):
            assert main([*ARGS, "--max-steps", "1", "--out", str(out), *extra]) == 2
            line = _error_line(capsys)
            assert line.startswith(f"goldfish train: error: --out {out} is in use by another goldfish train (pid {holder.pid} "), line
        assert sorted(p.name for p in out.iterdir()) == [".goldfish-lock"]  # nothing written beside the holder's lock
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert main([*ARGS, "--max-steps", "1", "--out", str(out)]) == 0  # a killed holder's lock is gone with it
    assert not (out / ".goldfish-lock").exists() and (out / "goldfish.json").is_file()
