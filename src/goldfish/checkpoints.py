"""The checkpoints of a ``goldfish train --out`` folder across invocations: which one ``--resume``
continues, whether it belongs to the same run, what ``--overwrite`` clears, and a full disk during
a save.

- Complete (``checkpoint_problem``): what HF ``Trainer`` writes into ``checkpoint-N/`` is there and
  readable, checked cheaply (headers and zip directories, never the tensors).
- The run (``run_identity``): every checkpoint holds ``goldfish_run.json``, written before HF saves
  into the folder (``RunRecorder``). ``resume_point`` compares it with this run: a difference in what
  defines the run refuses (``--force`` overrides it, and ``goldfish.json`` records that), a
  difference in a ``WARN_ONLY`` setting is logged.
- ``--overwrite`` (``outputs_to_clear``) removes only what a goldfish run writes.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import re
import shutil
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, sort_checkpoints

from goldfish.cache import OWNER_FILE, fingerprint, write_text_atomic

logger = logging.getLogger("goldfish")
RUN_FILE = "goldfish_run.json"  # in every checkpoint-N/: the run's identity (run_identity)
LOCK_FILE = ".goldfish-lock"  # in --out: locked by the run writing there (out_lock), naming its pid and host
RUN_FORMAT = "goldfish-run-v1"
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
           "adapter_model.safetensors", "adapter_model.bin")
# Settings that do not change what a step computes (where outputs go, logging, saving and evaluation,
# loader and preparation workers, kernels and switches that compute the same loss): a difference is
# logged, never refused. The data and the model are compared by content, so their paths are here too.
WARN_ONLY = {
    "output_dir", "data", "model", "num_proc", "data_cache", "merge", "disable_tqdm", "report_to", "run_name", "project",
    "push_to_hub", "skip_memory_metrics", "ddp_timeout", "torch_empty_cache_steps", "include_num_input_tokens_seen",
    "dataloader_num_workers", "dataloader_pin_memory", "dataloader_persistent_workers", "dataloader_prefetch_factor",
    "dataloader_multiprocessing_context", "per_device_eval_batch_size", "prediction_loss_only", "include_for_metrics",
    "batch_eval_metrics", "bf16_full_eval", "fp16_full_eval", "metric_for_best_model", "greater_is_better",
    "load_best_model_at_end", "debug", "do_train", "do_eval", "do_predict", "local_rank", "log_level", "log_level_replica",
    "log_on_each_node", "attn_implementation", "supervised_logits", "head_tile_size", "activation_checkpointing",
    "activation_checkpointing_kwargs", "torch_compile", "torch_compile_backend", "torch_compile_mode",
}
WARN_ONLY_PREFIXES = ("logging_", "save_", "hub_", "trackio_", "eval_")
NO_SPACE = re.compile(r"no space left on device|os error 28|inline_container\.cc.*unexpected pos", re.IGNORECASE)


# ---- complete checkpoints ----

def checkpoint_problem(folder: str | Path) -> str | None:
    """Why the checkpoint folder cannot be resumed from, or None when it is complete.

    Complete: every ``*.safetensors`` has a readable header and the size it announces; every
    ``*.pt``, ``*.pth`` and ``*.bin`` is a readable zip archive (``torch.save``'s format, whose
    directory is written last); model weights (``WEIGHTS``, FSDP's ``pytorch_model_fsdp*`` or
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
            with path.open("rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                if n > size - 8:
                    return f"{path.name} is cut short ({size} bytes, its header alone announces {8 + n})"
                header = json.loads(f.read(n))
            end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        except (struct.error, ValueError, KeyError, TypeError, AttributeError, IndexError):
            return f"{path.name} has no readable safetensors header"
        return None if size == 8 + n + end else f"{path.name} is cut short ({size} of {8 + n + end} bytes)"
    if path.suffix in (".pt", ".pth", ".bin") and path.is_file():
        try:
            with zipfile.ZipFile(path):
                return None
        except zipfile.BadZipFile as e:
            return f"{path.name} is cut short or damaged (not a readable torch.save archive: {e})"
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


# ---- the run a checkpoint belongs to ----

def run_identity(cfg, sources: list[dict], data_key: str | None = None) -> dict:
    """What defines the run ``cfg`` (a ``TrainConfig``) describes, as ``goldfish_run.json`` holds it:
    the resolved settings (``TrainConfig.settings()``), the hash and data-preparation versions, the
    world size, the model's fingerprint (``model_fingerprint``; None for ``--init``), a fingerprint of
    the protected secrets, and the data: the sources' content (``source_identity`` of each) and, once
    prepared, the prepared-data key (recorded, not compared: it also covers paths)."""
    from goldfish.data.prepare import PREPARE_VERSION
    from goldfish.hashing import HASH_VERSION
    from goldfish.secrets import load_secrets, secret_line

    identity = {"format": RUN_FORMAT, "settings": cfg.settings(), "hash_version": HASH_VERSION,
                "prepare_version": PREPARE_VERSION, "world_size": cfg.training.world_size,
                "model": None if cfg.model.model is None else model_fingerprint(cfg.model.model),
                "secrets": fingerprint([secret_line(s) for s in load_secrets(cfg.protection.protect)]),
                "data": {"key": data_key, "sources": sources}}
    return json.loads(json.dumps(identity, default=str))  # as it reads back from the file


def model_fingerprint(model_dir: str | Path, whole_up_to: int = 64 * 2**20) -> str:
    """16 hex digits of sha256 over a model folder's top-level files: by content up to ``whole_up_to``
    bytes (config, tokenizer, small weights), by name and size above it (large weights are not read)."""
    digest = hashlib.sha256()
    for f in sorted(p for p in Path(model_dir).iterdir() if p.is_file() and not p.name.startswith(".")):
        size = f.stat().st_size
        digest.update(f"{f.name}\0{size}\0".encode())
        if size <= whole_up_to:
            digest.update(f.read_bytes())
    return digest.hexdigest()[:16]


def run_differences(recorded: dict, current: dict) -> tuple[list[str], list[str]]:
    """(differences that make ``current`` another run than ``recorded``, differences in ``WARN_ONLY``
    settings or settings only one side has), one ``"what = there, here"`` line each."""
    refuse, warn = [], []
    old, new = recorded.get("settings", {}), current["settings"]
    for name in [*new, *(n for n in old if n not in new)]:
        if old.get(name) != new.get(name):
            line = f"{name} = {_shown(old, name)} there, {_shown(new, name)} here"
            only_one = name not in old or name not in new
            (warn if only_one or name in WARN_ONLY or name.startswith(WARN_ONLY_PREFIXES) else refuse).append(line)
    refuse += _data_differences(recorded.get("data", {}).get("sources", []), current["data"]["sources"])
    for key, what in (("model", "the model's fingerprint"), ("secrets", "the protected secrets' fingerprint"),
                      ("world_size", "processes"), ("hash_version", "the goldfish hash"),
                      ("prepare_version", "the data preparation"), ("format", RUN_FILE)):
        if recorded.get(key) != current[key]:
            refuse.append(f"{what}: {recorded.get(key)} there, {current[key]} here")
    return refuse, warn


def _shown(settings: dict, name: str) -> str:
    if name not in settings:
        return "(not recorded)"
    value = settings[name]
    return f"{value:g}" if isinstance(value, float) else json.dumps(value)


def _data_differences(old: list[dict], new: list[dict]) -> list[str]:
    """One line a source whose content differs (by file name: changed, added, removed). File sources
    are compared by their files (moved or renamed folders are the same data); ``embedded:PART`` by name
    and corpus."""
    if len(old) != len(new):
        return [f"the data: {len(old)} sources there, {len(new)} here"]
    lines = []
    for o, n in zip(old, new):
        if _content(o) == _content(n):
            continue
        was, now = ({name: digest for name, _, digest in s.get("files", [])} for s in (o, n))
        changes = [f"{what} {', '.join(names)}" for what, names in (
            ("changed", sorted(f for f in was.keys() & now.keys() if was[f] != now[f])),
            ("added", sorted(now.keys() - was.keys())), ("removed", sorted(was.keys() - now.keys()))) if names]
        lines.append(f"the data: {n['source']} holds other content ({'; '.join(changes) or 'another corpus or kind'})")
    return lines


def _content(source: dict) -> dict:
    return {k: v for k, v in source.items() if k != "source"} if "files" in source else source


@dataclass
class ResumePoint:
    checkpoint: Path
    record: dict  # goldfish.json's "resumed": checkpoint, skipped, forced, differences, warnings


def resume_point(cfg) -> ResumePoint:
    """The checkpoint ``cfg.run.resume`` names (``choose_checkpoint``), checked to be this run.

    Raises ValueError listing every difference that makes it another run (``run_differences``; a
    checkpoint without a readable ``goldfish_run.json`` counts as one) unless ``cfg.run.force``;
    logs the others. Hashes the sources once (about 1 s a GB) before anything is prepared.
    """
    from goldfish.data.sources import source_identity

    checkpoint, skipped = choose_checkpoint(cfg.out, cfg.run.resume)
    current = run_identity(cfg, [source_identity(s) for s in cfg.data.data])
    try:
        recorded = json.loads((checkpoint / RUN_FILE).read_text())
    except (OSError, ValueError):
        recorded = None
    if isinstance(recorded, dict):
        refuse, warn = run_differences(recorded, current)
    else:
        refuse, warn = [f"no readable {RUN_FILE} (saved by an older goldfish or another program): it cannot be checked"], []
    for line in warn:
        logger.warning("--resume: %s differs: %s", checkpoint.name, line)
    if refuse and not cfg.run.force:
        raise ValueError(f"--resume: {checkpoint.name} is another run: {'; '.join(refuse)}; pass --force to resume anyway")
    for line in refuse:
        logger.warning("--resume --force: resuming %s although %s", checkpoint.name, line)
    logger.info("--resume: resuming from %s", checkpoint)
    return ResumePoint(checkpoint, {"checkpoint": str(checkpoint), "skipped": skipped, "forced": bool(refuse),
                                    "differences": refuse, "warnings": warn})


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


# ---- one run at a time ----

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
