"""Saving a run's checkpoints: each records the run it belongs to (``RunRecorder``), and a full disk
during a save reads as such."""

from __future__ import annotations

import contextlib
import errno
import json
import re
import shutil
from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from goldfish.cache import write_text_atomic
from goldfish.checkpoints import RUN_FILE

NO_SPACE = re.compile(r"no space left on device|os error 28|inline_container\.cc.*unexpected pos", re.IGNORECASE)


class RunRecorder(TrainerCallback):
    """Writes ``identity`` (``run_identity``) as ``goldfish_run.json`` into each ``checkpoint-N/``.

    When a save is due (``control.should_save`` after HF's step or epoch end), the world's main
    process first removes a ``trainer_state.json`` an older save left in that folder (so the folder
    reads incomplete until this save ends) and writes the file; ``on_save`` writes it again, for save
    strategies that decide later (``best``). ``saving`` names the save under way (``checkpoint-N``,
    then ``the model`` after training), for ``full_disk_reported``.
    """

    def __init__(self, identity: dict):
        self.identity = identity
        self.saving: str | None = None

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_save:
            self.saving = f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            if state.is_world_process_zero:
                (Path(args.output_dir) / self.saving / "trainer_state.json").unlink(missing_ok=True)
                self._write(args, state)

    on_epoch_end = on_step_end

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self._write(args, state)
        self.saving = None

    def on_train_end(self, args, state, control, **kwargs):
        self.saving = "the model"

    def _write(self, args, state) -> None:
        path = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}" / RUN_FILE
        write_text_atomic(path, json.dumps(self.identity, indent=2) + "\n")

    @contextlib.contextmanager
    def full_disk_reported(self, out: str | Path):
        """Re-raise a write that failed for lack of space (ENOSPC, or its messages: safetensors' "No
        space left on device (os error 28)", torch's zip writer's "unexpected pos") as a one-line
        ValueError naming the save under way, ``out`` and its free space."""
        try:
            yield
        except Exception as e:
            if not _no_space(e):
                raise
            usage = shutil.disk_usage(out)
            doing = f"saving {self.saving}" if self.saving else "writing"
            raise ValueError(f"no space left on device while {doing} in {out} ({_mib(usage.free)} free of "
                             f"{_mib(usage.total)}): free space or choose another --out, then run again (--resume "
                             "continues from the newest complete checkpoint)") from None


def _no_space(e: BaseException | None) -> bool:
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError) and e.errno == errno.ENOSPC or NO_SPACE.search(str(e)):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"
