"""The prepared-data cache: what an entry is built from (``PreparedKey``), and entries checked on
every load (``load_verified``); ``goldfish.data.prepare`` builds them."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from goldfish.cache import fingerprint

PREPARE_VERSION = "prepare-v8"  # bump when the examples or the cache layout change
TRAIN_COLUMNS = ("input_ids", "labels", "goldfish_k", "position_ids", "goldfish_protected", "goldfish_aligned")
logger = logging.getLogger("goldfish")


@dataclass
class PreparedData:
    train: object  # datasets.Dataset: the rows to train on
    counts: dict  # per epoch: input tokens, supervised / dropped / kept targets, drop rate, examples, rows
    path: Path  # the cache folder
    reused: bool


@dataclass(frozen=True)
class PreparedKey:
    """Everything a cache entry is built from: the sources' content (``source_identity`` of each), the
    tokenizer (``tokenizer_identity``), the row settings (the ``DataSettings`` fields, and ``protect``:
    the ``fingerprint`` of the secrets' lines, never the lines), and the mask rule but for where its
    secrets were read from (``GoldfishConfig`` without ``protect``). ``digest`` names the entry."""

    sources: list[dict]
    tokenizer: str
    settings: dict
    goldfish: dict

    @classmethod
    def of(cls, identities: list[dict], tokenizer, row_settings: dict, gcfg, secrets) -> PreparedKey:
        """The key of preparing sources of these ``identities`` with ``tokenizer``, ``row_settings``
        (the ``DataSettings`` fields), ``gcfg`` (a ``GoldfishConfig``) and ``secrets`` (``goldfish.secrets.Secret``s)."""
        from goldfish.secrets import secret_line

        lines = [secret_line(s) for s in secrets]
        return cls(identities, tokenizer_identity(tokenizer), row_settings | {"protect": fingerprint(lines) if lines else []},
                   {k: v for k, v in gcfg.to_dict().items() if k != "protect"})

    @property
    def digest(self) -> str:
        return fingerprint(PREPARE_VERSION, self.sources, self.tokenizer, self.settings, self.goldfish)

    @property
    def lineage(self) -> str:
        """The digest but for the content: a source's path and split stand for it (the splits of one
        folder are other sources); entries of one lineage hold older and newer content of the same files."""
        paths = [(i["source"], i.get("split")) for i in self.sources]
        return fingerprint(PREPARE_VERSION, paths, self.tokenizer, self.settings, self.goldfish)

    def record(self) -> dict:
        """What ``prepared.json`` records of the key."""
        return {"version": PREPARE_VERSION, "lineage": self.lineage, "sources": self.sources, "settings": self.settings,
                "goldfish": self.goldfish}


def tokenizer_identity(tokenizer) -> str:
    """16 hex digits over a tokenizer's vocabulary, merges, special tokens and chat template."""
    backend = tokenizer.backend_tokenizer.to_str() if getattr(tokenizer, "is_fast", False) else repr(sorted(tokenizer.get_vocab().items()))
    extra = json.dumps([tokenizer.chat_template, tokenizer.eos_token_id, tokenizer.pad_token_id, type(tokenizer).__name__], default=str)
    return hashlib.sha256((backend + extra).encode()).hexdigest()[:16]


class DamagedCache(Exception):
    """A prepared-data cache entry that does not match what was recorded when it was written."""


def file_check(path: Path) -> dict:
    """What ``load_verified`` compares: the file's size and its row count."""
    from datasets import Dataset

    return {"bytes": path.stat().st_size, "rows": Dataset.from_file(str(path)).num_rows}


def _read_record(folder: Path) -> tuple[dict, list[tuple[str, int, int]], int]:
    """(``prepared.json``, (file, bytes, rows) of each file it lists, the total rows); DamagedCache otherwise."""
    try:
        record = json.loads((folder / "prepared.json").read_text())
        checks = [(name, int(record["checks"][name]["bytes"]), int(record["checks"][name]["rows"])) for name in record["files"]]
        return record, checks, int(record["rows"])
    except FileNotFoundError:
        raise DamagedCache("prepared.json is missing") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DamagedCache(f"prepared.json cannot be read: {type(e).__name__}: {e}") from None


def load_verified(folder: Path) -> tuple[dict, object]:
    """(record, training rows) of a cache entry, after checking that ``prepared.json`` reads and
    that every Arrow file it lists is there with the size and row count recorded when it was
    written, the rows adding up to the recorded total; DamagedCache(reason) otherwise."""
    import pyarrow as pa
    from datasets import Dataset, concatenate_datasets

    record, checks, total = _read_record(folder)
    parts = []
    for name, size, rows in checks:
        path = folder / name
        if not path.is_file():
            raise DamagedCache(f"{name} is missing")
        if path.stat().st_size != size:
            raise DamagedCache(f"{name} holds {path.stat().st_size} bytes, {size} when it was written")
        try:
            part = Dataset.from_file(str(path))
        except (OSError, ValueError, pa.ArrowException) as e:
            raise DamagedCache(f"{name} cannot be read: {e}") from None
        if part.num_rows != rows:
            raise DamagedCache(f"{name} holds {part.num_rows} rows, {rows} when it was written")
        parts.append(part)
    if not parts or sum(len(p) for p in parts) != total:
        raise DamagedCache(f"its files hold {sum(len(p) for p in parts)} rows, prepared.json counts {total}")
    ds = concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    return record, ds.select_columns([c for c in TRAIN_COLUMNS if c in ds.column_names])


def remove_superseded(root: Path, key: PreparedKey) -> None:
    """Remove the entries of ``root`` of ``key``'s lineage (same source paths and splits, tokenizer,
    settings and mask rule) but another digest: built from other content."""
    for entry in root.iterdir():
        if entry.name == key.digest or entry.name.startswith(".") or not entry.is_dir():
            continue
        try:
            if json.loads((entry / "prepared.json").read_text()).get("lineage") != key.lineage:
                continue
        except (OSError, ValueError, AttributeError):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        logger.info("prepared data: removed %s (the same sources and settings, built from other content)", entry)
