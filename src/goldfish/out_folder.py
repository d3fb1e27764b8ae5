"""The ``goldfish train --out`` folder across invocations: one run at a time writes into it
(``out_lock``), and ``--overwrite`` removes only what a goldfish run writes (``outputs_to_clear``)."""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
from pathlib import Path

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from goldfish.cache import OWNER_FILE
from goldfish.checkpoints import checkpoint_step

logger = logging.getLogger("goldfish")
LOCK_FILE = ".goldfish-lock"  # in --out: locked by the run writing there (out_lock), naming its pid and host


@contextlib.contextmanager
def out_lock(out: str | Path):
    """Hold an exclusive lock on the folder ``out`` while the block runs; ``out`` is left as the block
    leaves it (the lock file removed, and ``out`` itself if the lock made it and it stayed empty).

    The lock is ``fcntl.flock`` on ``out/LOCK_FILE``, which reads "pid P on HOST" while held; the
    kernel releases it when the holder ends, however it ends (a killed holder's file is taken over).
    Raises ValueError naming the holder when another process holds it.
    """
    import fcntl
    import os
    import socket

    out = Path(out)
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "pid unknown"
            os.close(fd)
            raise ValueError(f"--out {out} is in use by another goldfish train ({holder}); wait for it to end or choose "
                             "another --out") from None
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break  # else its holder removed the file between our open and our lock: lock the new one
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)
        if made:
            with contextlib.suppress(OSError):
                out.rmdir()


# ---- --overwrite ----

RUN_DIRS = re.compile(rf"{PREFIX_CHECKPOINT_DIR}-\d+|runs|merged")
RUN_FILES = re.compile(
    r"goldfish\.json|goldfish_config\.yaml|training_args\.bin|config\.json|generation_config\.json|adapter_config\.json"
    r"|(model|pytorch_model|adapter_model)(-\d+-of-\d+)?\.(safetensors|bin)|(model\.safetensors|pytorch_model\.bin)\.index\.json"
    r"|tokenizer(_config)?\.json|tokenizer\.model|special_tokens_map\.json|added_tokens\.json|chat_template\.(jinja|json)"
    r"|vocab\.(json|txt)|merges\.txt|\.goldfish.*\.tmp|\.goldfish-write-check\..*")
RUN_MARKS = ("goldfish.json", "goldfish_config.yaml", "runs")  # or a checkpoint-N/: a goldfish run wrote here


def outputs_to_clear(out: str | Path) -> list[Path]:
    """What ``--overwrite`` removes from ``out``: all of it (but atomic_dir's owner file), when every
    entry is one a goldfish run writes (``RUN_DIRS``, ``RUN_FILES``, PEFT's model card README.md) and
    one marks a run (``RUN_MARKS`` or a ``checkpoint-N/``); [] when there is nothing. Raises
    ValueError otherwise, naming what goldfish did not write; nothing is removed here."""
    out = Path(out)
    entries = sorted(p for p in out.iterdir() if p.name not in (OWNER_FILE, LOCK_FILE)) if out.is_dir() else []
    if not entries:
        return []
    foreign = [p.name for p in entries if not _written_by_a_run(p)]
    if foreign:
        raise ValueError(f"--overwrite: {out} holds {', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}, which "
                         "goldfish train does not write; move them away or choose another --out (nothing was removed)")
    if not any(p.name in RUN_MARKS or checkpoint_step(p) is not None for p in entries):
        raise ValueError(f"--overwrite: {out} holds no goldfish train run (no goldfish.json, goldfish_config.yaml, runs/ "
                         "or checkpoint-N/); choose another --out (nothing was removed)")
    return entries


def clear_outputs(paths: list[Path]) -> None:
    """Remove ``paths`` (from ``outputs_to_clear``): folders with their contents, links themselves."""
    for p in paths:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)
    if paths:
        logger.info("--overwrite: removed %d old outputs from %s", len(paths), paths[0].parent)


def _written_by_a_run(p: Path) -> bool:
    if p.is_dir() and not p.is_symlink():
        return RUN_DIRS.fullmatch(p.name) is not None
    if p.name == "README.md":  # PEFT's model card of a --lora run
        return "library_name: peft" in p.read_text(errors="replace")
    return RUN_FILES.fullmatch(p.name) is not None
