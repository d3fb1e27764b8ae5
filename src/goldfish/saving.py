"""Saving a run's checkpoints: each records the run it belongs to (``RunRecorder``), and a full disk
during a save reads as such."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from goldfish.cache import raise_if_no_space, write_text_atomic
from goldfish.checkpoints import RUN_FILE


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
        """Re-raise a write that failed for lack of space (``goldfish.cache.raise_if_no_space``) as a
        one-line ValueError naming the save under way, ``out`` and its free space."""
        try:
            yield
        except Exception as e:
            doing = f"saving {self.saving}" if self.saving else "writing"
            raise_if_no_space(e, out, doing, "free space or choose another --out, then run again (--resume continues "
                              "from the newest complete checkpoint)")
            raise
