"""Whether a checkpoint belongs to the run ``--resume`` continues: ``run_identity`` (what defines a
run, written into every ``checkpoint-N/`` as ``goldfish_run.json``) compared by ``run_differences``.

A difference in what defines the run refuses (``--force`` overrides it, and ``goldfish.json``
records that); a difference in a setting that does not change what a step computes
(``goldfish.train_config.RESUME_WARN_ONLY``, from the fields' metadata) is logged.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from goldfish.cache import fingerprint
from goldfish.checkpoints import RUN_FILE, RUN_FORMAT, choose_checkpoint
from goldfish.train_config import RESUME_WARN_ONLY

logger = logging.getLogger("goldfish")


def run_identity(cfg, sources: list[dict], data_key: str | None = None) -> dict:
    """What defines the run ``cfg`` (a ``TrainConfig``) describes, as ``goldfish_run.json`` holds it:
    the resolved settings (``TrainConfig.settings()``), the hash and data-preparation versions, the
    world size, the model's fingerprint (``model_fingerprint``; None for ``--init``), fingerprints of
    the ``--chat-template``'s content (a file by what it holds, not its path) and of the protected
    secrets, and the data: the sources' content (``source_identity`` of each) and, once
    prepared, the prepared-data key (recorded, not compared: it also covers paths)."""
    from goldfish.data.prepared import PREPARE_VERSION
    from goldfish.data.templates import resolve_chat_template
    from goldfish.hashing import HASH_VERSION
    from goldfish.secrets import secret_line

    template = cfg.model.chat_template
    identity = {"format": RUN_FORMAT, "settings": cfg.settings(), "hash_version": HASH_VERSION,
                "prepare_version": PREPARE_VERSION, "world_size": cfg.training.world_size,
                "model": None if cfg.model.model is None else model_fingerprint(cfg.model.model),
                "chat_template": None if template is None else fingerprint(resolve_chat_template(template)),
                "secrets": fingerprint([secret_line(s) for s in cfg.secrets]),
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
    """(differences that make ``current`` another run than ``recorded``, differences in ``RESUME_WARN_ONLY``
    settings or settings only one side has), one ``"what = there, here"`` line each."""
    refuse, warn = [], []
    old, new = recorded.get("settings", {}), current["settings"]
    for name in [*new, *(n for n in old if n not in new)]:
        if old.get(name) != new.get(name):
            line = f"{name} = {_shown(old, name)} there, {_shown(new, name)} here"
            only_one = name not in old or name not in new
            (warn if only_one or name in RESUME_WARN_ONLY else refuse).append(line)
    refuse += _data_differences(recorded.get("data", {}).get("sources", []), current["data"]["sources"])
    for key, what in (("model", "the model's fingerprint"), ("chat_template", "the chat template's content"),
                      ("secrets", "the protected secrets' fingerprint"),
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
