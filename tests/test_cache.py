"""goldfish.cache: atomic folders, the removal of temp folders that killed runs left, write checks."""

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from helpers import read_only_folder

from goldfish.cache import OWNER_FILE, STALE_AFTER_S, atomic_dir, check_writable, remove_stale_temps, this_host


def _temp(parent: Path, name: str, owner: dict | None, age_s: float = 0) -> Path:
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{name}.", suffix=".tmp"))
    (tmp / "part.arrow").write_bytes(b"half written")
    if owner is not None:
        (tmp / OWNER_FILE).write_text(json.dumps(owner))
    if age_s:
        past = time.time() - age_s
        os.utime(tmp, (past, past))
    return tmp


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_only_temp_folders_of_dead_processes_are_removed(tmp_path):
    host = this_host()
    dead = _temp(tmp_path, "key", {"host": host, "pid": _dead_pid()})
    alive = _temp(tmp_path, "key", {"host": host, "pid": os.getpid()}, age_s=10 * STALE_AFTER_S)
    elsewhere = _temp(tmp_path, "key", {"host": host + "-other", "pid": _dead_pid()}, age_s=10 * STALE_AFTER_S)
    ownerless_old = _temp(tmp_path, "key", None, age_s=2 * STALE_AFTER_S)  # older code, or an owner file never written
    ownerless_new = _temp(tmp_path, "key", None)  # a run between mkdtemp and its owner file
    other_name = _temp(tmp_path, "other", {"host": host, "pid": _dead_pid()})
    assert sorted(remove_stale_temps(tmp_path, "key")) == sorted([dead, ownerless_old])
    assert alive.is_dir() and elsewhere.is_dir() and ownerless_new.is_dir() and other_name.is_dir()
    assert remove_stale_temps(tmp_path) == [other_name]  # every name


def test_atomic_dir_cleans_up_after_a_killed_run_and_leaves_no_owner_file(tmp_path):
    final = tmp_path / "entry"
    stale = _temp(tmp_path, "entry", {"host": this_host(), "pid": _dead_pid()})
    with atomic_dir(final) as tmp:
        assert (tmp / OWNER_FILE).is_file() and not stale.exists()
        (tmp / "data").write_text("new")
    assert sorted(p.name for p in final.iterdir()) == ["data"]
    with pytest.raises(RuntimeError), atomic_dir(final) as tmp:
        (tmp / "data").write_text("half")
        raise RuntimeError("killed")
    assert (final / "data").read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["entry"]


def test_check_writable_names_the_folder_that_cannot_be_written(tmp_path):
    check_writable(tmp_path / "new" / "deeper", "--out")  # made later, in a writable parent
    check_writable(tmp_path, "--out")
    read_only = read_only_folder(tmp_path)
    with pytest.raises(ValueError, match=f"--out {read_only / 'run'}: cannot write in {read_only} "):
        check_writable(read_only / "run", "--out")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        check_writable(tmp_path / "file" / "run", "--out")
    assert not [p for p in tmp_path.rglob("*") if "write-check" in p.name]
