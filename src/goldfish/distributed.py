"""The torch.distributed process group of a run under ``torchrun`` / ``accelerate launch``: opened with a
timeout on every collective, closed so that every rank's process exits.

Nothing here imports torch.distributed for a single-process run.
"""

from __future__ import annotations

import gc
import os
import sys
from datetime import timedelta


def world_size() -> int:
    """The number of processes of this run (``WORLD_SIZE``, set by torchrun / accelerate; 1 when unset)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank_label() -> str:
    """``"rank R of W: "`` in a multi-process run (so each rank's error names itself), else ``""``."""
    return f"rank {os.environ.get('RANK', '?')} of {world_size()}: " if world_size() > 1 else ""


def cpu_requested() -> bool:
    """Whether the launcher asked for a CPU run (``ACCELERATE_USE_CPU`` true) even where CUDA is available."""
    return os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true")


def open_cpu_process_group(timeout_s: float) -> None:
    """Open the gloo group of a multi-process CPU run with ``timeout_s`` on every collective.

    HF's TrainingArguments passes ``ddp_timeout`` to the process group only on accelerators; on the CPU
    it lets gloo keep its 30-minute default, so a rank whose peer is stuck waits half an hour. Opened here
    first, accelerate finds the group initialized and uses it. No-op for one process, an open group, or
    a CUDA run (HF passes the timeout there itself).
    """
    import torch

    if world_size() <= 1 or (torch.cuda.is_available() and not cpu_requested()):
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=timedelta(seconds=timeout_s))


def close_process_group() -> None:
    """Destroy the process group this run opened (Trainer never does) so that every rank's process exits.

    The root cause of the exit hang this guards against: DDP's C++ Reducer holds a reference to the
    group and sits in a Python reference cycle, so the group's last reference used to go away inside
    ``gc.collect()`` (or at interpreter exit) from C++, *with the GIL held*; the gloo backend's destructor
    then joins its worker threads, and a worker that needs the GIL to finish (releasing a Python-owned
    tensor, a future's callback) waits for it forever: a futex wait after "saved". torch's Python handle
    on a group drops its reference with the GIL released. So: keep a handle, destroy the group, collect
    the cycle (the Reducer's reference goes, the handle's remains), and drop the handle last.
    """
    dist = sys.modules.get("torch.distributed")  # never import torch just to find nothing to close
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return
    handle = dist.group.WORLD
    dist.destroy_process_group()
    gc.collect()
    del handle  # the last reference, released by torch with the GIL free: gloo's threads join here
