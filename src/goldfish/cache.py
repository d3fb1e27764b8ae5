"""The user cache (``$GOLDFISH_CACHE``, default ``~/.cache/goldfish``), atomic writes, and checks
that a folder can be written."""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path

OWNER_FILE = ".goldfish-owner"  # in a temp folder of atomic_dir while its process works in it: {"host", "pid"}
WRITE_CHECK_PREFIX = ".goldfish-write-check."  # check_writable's probe file, there for an instant (another rank's, say)
# a write that failed for lack of space, as the writers say it: ENOSPC, safetensors' "No space left on device
# (os error 28)", torch's zip writer's "unexpected pos" after a short write
NO_SPACE = re.compile(r"no space left on device|os error 28|inline_container\.cc.*unexpected pos", re.IGNORECASE)
STALE_AFTER_S = 60  # a temp folder without an owner file (older code, or one mid-rename) is stale after this


def cache_dir() -> Path:
    root = Path(os.environ.get("GOLDFISH_CACHE", Path.home() / ".cache" / "goldfish"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def raise_if_no_space(e: BaseException, folder: str | Path, doing: str, advice: str) -> None:
    """Raise a one-line ValueError when ``e`` (or an exception in its chain) is a write that failed for
    lack of space: what was being done, ``folder`` and its free space, then ``advice``; else return."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError) and e.errno == errno.ENOSPC or NO_SPACE.search(str(e)):
            usage = shutil.disk_usage(folder)
            raise ValueError(f"no space left on device while {doing} in {folder} ({usage.free / 2**20:.1f} MiB free of "
                             f"{usage.total / 2**20:.1f} MiB): {advice}") from None
        seen.add(id(e))
        e = e.__cause__ or e.__context__


def fingerprint(*parts) -> str:
    """Short sha256 of the JSON form of ``parts`` (cache keys)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def check_writable(folder: str | Path, what: str = "folder") -> None:
    """Raise ValueError unless a file can be created in ``folder``, or, if it does not exist yet, in
    its nearest existing parent (where it would be made). Tried for real: a temp file is created and
    removed, so permissions, read-only mounts and a parent that is a file are all caught."""
    folder = Path(folder).absolute()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise ValueError(f"{what} {folder}: {existing} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=WRITE_CHECK_PREFIX)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"{what} {folder}: cannot write in {existing} ({e.strerror}); choose a folder you can write to") from None


def _check_replaceable(out: Path, tool: str) -> None:
    """ValueError unless ``tool`` may replace the folder ``out`` (absolute): it can be written, it is not
    a file, and it is neither the current folder nor above it."""
    check_writable(out, "--out")
    if Path.cwd().is_relative_to(out):
        raise ValueError(f"--out {out}: {tool} replaces its --out folder whole; give a folder that is not the current one or above it")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a new or empty folder")


def check_out_folder(out: str | Path, own_files: tuple[str, ...], tool: str) -> None:
    """Raise ValueError unless ``atomic_dir(out)`` can replace ``out`` whole: it and its parent can be
    written, and it is new, empty, or holds nothing but ``own_files`` (a previous run of ``tool``)."""
    out = Path(out).absolute()
    _check_replaceable(out, tool)
    check_writable(out.parent, "--out")  # the new folder is made beside it, then renamed in
    if out.is_dir():
        other = sorted(p.name for p in out.iterdir() if p.name not in own_files)
        if other:
            raise ValueError(f"--out {out} holds files that are not {tool}'s ({', '.join(other[:5])}"
                             f"{', ...' if len(other) > 5 else ''}); {tool} replaces the whole folder: give a new or empty one")


def claim_out_folder(out: str | Path, marker: str, tool: str) -> None:
    """Make ``out`` the folder of a run of ``tool`` that writes into it piece by piece (an experiment):
    ValueError unless it is new, empty, or a previous run's (it holds the file ``marker``); a previous
    run's folder is removed whole, so no file of it (a summary, a seed's report) outlives this run;
    then ``marker`` is written first, so a run killed on the way leaves a folder the next run replaces."""
    out = Path(out).absolute()
    _check_replaceable(out, tool)
    if out.is_dir() and any(out.iterdir()):
        if not (out / marker).is_file():
            raise ValueError(f"--out {out} is not empty and is not a previous run of {tool} (it has no {marker}); "
                             "give a new or empty folder")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / marker).write_text(json.dumps({"tool": tool, "host": this_host(), "pid": os.getpid()}) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temp file in the same folder and a rename."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def this_host() -> str:
    """This machine as an owner file names it: the host name and, on Linux, the boot id (nodes
    that share a host name, or a file system, still differ), so a pid is judged only where it ran."""
    boot = Path("/proc/sys/kernel/random/boot_id")
    return socket.gethostname() + (f" {boot.read_text().strip()}" if boot.is_file() else "")


def _is_stale(tmp: Path) -> bool:
    """A temp folder of ``atomic_dir`` whose process is gone: its owner file names this host and a
    pid that no longer runs; or it has no readable owner file and was last changed over
    STALE_AFTER_S ago. Folders of other hosts (a shared file system) are never judged stale."""
    try:
        owner = json.loads((tmp / OWNER_FILE).read_text())
        host, pid = owner["host"], int(owner["pid"])
    except (OSError, ValueError, KeyError, TypeError):  # none (older code, mid-rename) or cut short by a kill
        try:
            return time.time() - tmp.stat().st_mtime > STALE_AFTER_S
        except FileNotFoundError:  # removed meanwhile
            return False
    if host != this_host():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def remove_stale_temps(parent: str | Path, name: str | None = None) -> list[Path]:
    """Remove the temp folders that killed runs of ``atomic_dir(parent / name)`` left (every name
    when None); returns the folders removed. Temp folders of live processes are left alone."""
    pattern = ".*.tmp" if name is None else f".{glob.escape(name)}.*.tmp"
    removed = []
    for tmp in Path(parent).glob(pattern):
        if tmp.is_dir() and _is_stale(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


@contextlib.contextmanager
def atomic_dir(final: Path):
    """Yield a temp folder beside ``final``; on success it replaces ``final`` in one rename.

    On error the temp folder is removed and ``final`` is left as it was. A run killed on the way
    (SIGKILL, power loss) leaves its temp folder behind; the next ``atomic_dir`` of the same
    ``final`` removes it (see ``remove_stale_temps``). While the run works, the temp folder holds
    a hidden owner file (host and pid), removed before the rename.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(final.parent, final.name)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    try:
        (tmp / OWNER_FILE).write_text(json.dumps({"host": this_host(), "pid": os.getpid()}))
        yield tmp
        (tmp / OWNER_FILE).unlink()
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}.tmp")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
