"""Complete checkpoints of a ``goldfish train --out`` folder: which one ``--resume`` can continue.

Complete (``checkpoint_problem``): what HF ``Trainer`` writes into ``checkpoint-N/`` is there and
readable, checked cheaply (headers, zip directories and pickles, never the tensors). Whether a
complete checkpoint belongs to the same run is ``goldfish.resume``; saving is ``goldfish.saving``;
the ``--out`` folder itself (one run at a time, ``--overwrite``) is ``goldfish.out_folder``.
"""

from __future__ import annotations

import json
import logging
import re
import struct
import zipfile
from pathlib import Path

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, sort_checkpoints

logger = logging.getLogger("goldfish")
RUN_FILE = "goldfish_run.json"  # in every checkpoint-N/: the run's identity (goldfish.resume.run_identity)
RUN_FORMAT = "goldfish-run-v1"
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
           "adapter_model.safetensors", "adapter_model.bin")
NOT_LOADED = ("training_args.bin",)  # saved by HF beside the states, never loaded on resuming (a pickled object)


def checkpoint_problem(folder: str | Path) -> str | None:
    """Why the checkpoint folder cannot be resumed from, or None when it is complete.

    Complete: every ``*.safetensors`` has a readable header and the size it announces; every
    ``*.pt``, ``*.pth`` and ``*.bin`` is a readable zip archive (``torch.save``'s format, whose
    directory is written last) that loads as HF loads it on resuming (but ``NOT_LOADED``); model weights (``WEIGHTS``, FSDP's ``pytorch_model_fsdp*`` or
    DeepSpeed's ``global_step*/``), an optimizer state (``optimizer*`` or ``global_step*/``),
    ``scheduler.pt`` (but under DeepSpeed) and the RNG state of each process (``rng_state.pth``, or
    ``rng_state_R.pth`` for every rank R of the world size ``goldfish_run.json`` records) are there;
    ``trainer_state.json`` (HF's last file) parses and, for ``checkpoint-N``, is at step N.
    """
    folder = Path(folder)
    names = sorted(p.name for p in folder.iterdir())
    for name in names:
        if (problem := _file_problem(folder / name)) is not None:
            return problem
    deepspeed = any(n.startswith("global_step") for n in names)
    if not any(n in WEIGHTS or n.startswith(("pytorch_model_fsdp", "global_step")) for n in names):
        return "no model weights"
    if not any(n.startswith(("optimizer", "global_step")) for n in names):
        return "no optimizer state (saved with --save-only-model?)"
    if not deepspeed and "scheduler.pt" not in names:
        return "scheduler.pt is missing"
    if missing := [n for n in _rng_files(folder, names) if n not in names]:
        return f"{', '.join(missing)} missing"
    try:
        state = json.loads((folder / "trainer_state.json").read_text())
    except FileNotFoundError:
        return "trainer_state.json is missing (the save did not finish)"
    except (OSError, ValueError) as e:
        return f"trainer_state.json cannot be read ({e})"
    step = checkpoint_step(folder)
    at = state.get("global_step") if isinstance(state, dict) else None
    if step is not None and at != step:
        return f"trainer_state.json is at step {at}, not {step}"
    return None


def checkpoint_step(folder: str | Path) -> int | None:
    """N of a ``checkpoint-N`` folder; None for another name."""
    match = re.fullmatch(rf"{PREFIX_CHECKPOINT_DIR}-(\d+)", Path(folder).name)
    return int(match.group(1)) if match else None


def _file_problem(path: Path) -> str | None:
    if path.suffix == ".safetensors":
        size = path.stat().st_size
        try:
            n, header = _safetensors_header(path)
            if n > size - 8:
                return f"{path.name} is cut short ({size} bytes, its header alone announces {8 + n})"
            end = max((t["data_offsets"][1] for t in header.values()), default=0)
        except (struct.error, ValueError, KeyError, TypeError, AttributeError, IndexError):
            return f"{path.name} has no readable safetensors header"
        return None if size == 8 + n + end else f"{path.name} is cut short ({size} of {8 + n + end} bytes)"
    if path.suffix in (".pt", ".pth", ".bin") and path.is_file():
        try:
            with zipfile.ZipFile(path):
                pass
        except zipfile.BadZipFile as e:
            return f"{path.name} is cut short or damaged (not a readable torch.save archive: {e})"
        return None if path.name in NOT_LOADED else _unpickling_problem(path)
    return None


def _unpickling_problem(path: Path) -> str | None:
    """Why HF ``Trainer`` could not load the torch.save archive ``path`` as it does on resuming
    (``torch.load(weights_only=True)`` under its numpy allowlist), or None; memory-mapped, so the
    tensors are not read."""
    import pickle

    import torch
    from transformers.trainer_pt_utils import safe_globals

    try:
        with safe_globals():
            torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError, ImportError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return f"{path.name} cannot be loaded ({type(e).__name__}: {first})"
    return None


def _rng_files(folder: Path, names: list[str]) -> list[str]:
    """The RNG files a complete checkpoint holds: one a process of the recorded world size, or any one."""
    try:
        world_size = int(json.loads((folder / RUN_FILE).read_text())["world_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return [] if any(n.startswith("rng_state") for n in names) else ["rng_state.pth"]
    return ["rng_state.pth"] if world_size == 1 else [f"rng_state_{r}.pth" for r in range(world_size)]


def choose_checkpoint(out: str | Path, resume: str) -> tuple[Path, list[str]]:
    """(the checkpoint to resume, one line a skipped checkpoint with why). ``resume == "latest"``: the
    newest complete ``checkpoint-N`` in ``out`` by step, skipping (and logging) incomplete newer ones;
    otherwise the folder ``resume``, which must be complete. Raises ValueError when there is none."""
    if resume != "latest":
        if (problem := checkpoint_problem(resume)) is not None:
            raise ValueError(f"--resume {resume}: not a complete checkpoint: {problem}")
        return Path(resume), []
    folders = [Path(f) for f in reversed(sort_checkpoints(str(out)))] if Path(out).is_dir() else []
    if not folders:
        raise ValueError(f"--resume: no checkpoint-* folder in {out}")
    skipped = []
    for folder in folders:
        if (problem := checkpoint_problem(folder)) is None:
            return folder, skipped
        logger.warning("--resume: skipping %s: %s", folder.name, problem)
        skipped.append(f"{folder.name}: {problem}")
    raise ValueError(f"--resume: no complete checkpoint in {out} ({'; '.join(skipped)})")


def _safetensors_header(path: Path) -> tuple[int, dict]:
    """(the header's length, its tensors: name -> dtype, shape and data offsets; none when the file is
    shorter than its header) of a safetensors file; struct.error or ValueError without a readable header."""
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > path.stat().st_size - 8:
            return n, {}
        header = json.loads(f.read(n))
    return n, {k: t for k, t in header.items() if k != "__metadata__"}


def check_weights_fit(checkpoint: Path, model) -> None:
    """Raise ValueError when the checkpoint's saved weights (its safetensors files) have other shapes
    than ``model``'s parameters of the same names: another model size, which HF would fail to load
    (with ``--resume --force``) in a traceback. Names the model does not have are not compared."""
    own = {name: list(t.shape) for name, t in model.state_dict().items()}
    saved = {name: t["shape"] for f in sorted(Path(checkpoint).glob("*.safetensors")) for name, t in _safetensors_header(f)[1].items()}
    differ = [f"{name}: {saved[name]} there, {own[name]} here" for name in saved if name in own and saved[name] != own[name]]
    if differ:
        more = f"; {len(differ) - 1} more" if len(differ) > 1 else ""
        raise ValueError(f"--resume: the weights in {checkpoint.name} do not fit this model ({differ[0]}{more}): it holds "
                         "another model size; resume with the model it was trained with, or start again (--overwrite)")
