"""Prepare training data at scale: sources -> Arrow datasets -> tokenized, chunked examples ->
(packed) rows, as batched ``datasets.map``s with ``num_proc`` workers, cached on disk.

The prepared dataset lives in ``$GOLDFISH_CACHE/prepared/<key>/`` (or another folder you name):
the Arrow files the maps wrote (memory-mapped when loaded) and ``prepared.json`` (token counts, the
file list with each file's size and row count, the sources' content hashes; the secrets to protect
only as a fingerprint). The key covers the
sources' content (the sha256 of every file, see ``goldfish.data.sources.source_identity``), the
tokenizer (its vocabulary, merges, special tokens and chat template), the preparation settings and
the goldfish config (the per-epoch drop counts are computed during preparation).

Trust: an entry is checked on every load (each file present, of the size and row count recorded
when it was written; ``prepared.json`` readable); a damaged one is rebuilt with a warning naming
it, never used. An entry is built in a temp folder beside it and renamed in when complete (a
source that changed meanwhile is an error, not an entry); temp folders that killed runs left are
removed. Writing an entry removes the entries of the same sources
(paths), tokenizer, settings and goldfish config built from other content, so superseded content
does not pile up. Under ``torchrun`` / ``accelerate launch`` the main process prepares and the
others load the cache.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

import numpy as np

from goldfish.config import GoldfishConfig
from goldfish.data.prepared import (
    DamagedCache,
    PreparedData,
    PreparedKey,
    file_check,
    load_verified,
    remove_superseded,
)
from goldfish.data.chat import IGNORE_INDEX, dropped, require_offsets, tally_drops
from goldfish.data.sources import load_source, resolve_source, source_identity
from goldfish.data.formats import FORMATS
from goldfish.data.tokenize import (
    LONG_CHATS,
    check_record_size,
    empty_replies,
    secret_spans,
    document_format,
    document_k,
    encode_record,
    encode_text_record,
    encode_texts,
    fit_counts,
    fit_document,
    pack_plan,
    pack_row,
    record_secrets,
)

SLICE_BYTES = 128 * 2**20  # a source is tokenized in contiguous slices of about this much Arrow data
logger = logging.getLogger("goldfish")


@dataclass(frozen=True)
class DataSettings:
    """How documents become training rows (``goldfish train`` flags of the same names).

    ``system_into_user``: chats' system prompts go into the next user turn before rendering
    (``goldfish.data.chat.fold_system_into_user``), for templates that drop system messages.
    """

    seq_len: int = field(default=512, metadata={"help": "tokens a row; a longer document is split into chunks, each masked as "
                                                        "its own document"})
    pack: bool = field(default=False, metadata={"help": "pack documents into full rows (position_ids restart per document)"})
    text_field: str = field(default="text", metadata={"help": "the field that holds plain text"})
    assistant_turns: Literal["all", "last"] = field(default="all", metadata={
        "help": "chats: supervise every assistant turn or only the last"})
    format: Literal[("auto", *FORMATS)] = field(default="auto", metadata={
        "help": "record format: auto (from the fields), text, messages, prompt_completion, sharegpt (FastChat's "
                "conversations/from/value) or alpaca (instruction/input/output)"})
    long_chats: Literal[LONG_CHATS] = field(default="truncate", metadata={
        "help": "a chat longer than --seq-len: truncate it after the last assistant turn that fits (every kept reply keeps "
                "its prompt), drop it, or split it into chunks like text"})
    system_into_user: bool = field(default=False, metadata={
        "help": "chats: prepend each system prompt to the next user turn (joined by a blank line, as FastChat and "
                "LLaMA-Factory do) before the chat template renders it; for templates that drop system messages"})


class _Tokenize:
    """Batched map: documents -> examples, with each example's token and drop counts; how each
    document was fitted to ``seq_len``, and what the chat template left out of each (``template_drops``),
    go to a JSON file per batch in ``fit_dir`` (documents left out entirely leave no example to count
    them on). ``secrets``: protect them (a
    ``goldfish_protected`` column), None for no protection."""

    def __init__(self, tokenizer, fmt: str, settings: DataSettings, gcfg: GoldfishConfig, source: str, secrets, offset: int,
                 fit_dir: Path):
        self.tokenizer, self.fmt, self.settings, self.gcfg, self.source = tokenizer, fmt, settings, gcfg, source
        self.secrets, self.offset, self.fit_dir = secrets, offset, fit_dir  # offset: the source index of the slice's first record

    def _documents(self, batch: dict, indices: list[int]):
        """(index, document dict, input_ids, labels, marker, template drops) per record; text is tokenized as one batch."""
        docs = [{k: v for k, v in ((k, batch[k][i]) for k in batch) if v is not None} for i in range(len(indices))]
        if self.fmt == "text":
            field = self.settings.text_field
            secrets = None if self.secrets is None else []
            for idx, d in zip(indices, docs):
                try:
                    check_record_size(d)
                    if not isinstance(d.get(field), str):
                        raise ValueError(f"{field!r} must be a string, got {d.get(field)!r}")
                    if secrets is not None:
                        secrets.append(record_secrets(d, self.secrets))
                except ValueError as e:
                    raise ValueError(f"{self.source}: record {idx}: {e}") from None
            try:
                encoded = encode_texts([d[field] for d in docs], self.tokenizer, secrets)
            except ValueError as e:
                raise ValueError(f"{self.source}: {e}") from None
            for idx, d, (ids, marker) in zip(indices, docs, encoded):
                yield idx, d, *encode_text_record(ids, marker, self.tokenizer.eos_token_id), {}
            return
        for idx, d in zip(indices, docs):
            try:
                encoded = encode_record(d, self.tokenizer, self.settings.text_field, self.settings.assistant_turns,
                                        self.secrets, self.fmt, self.settings.system_into_user)
            except ValueError as e:
                raise ValueError(f"{self.source}: record {idx}: {e}") from None
            yield idx, d, *encoded

    def __call__(self, batch: dict, indices: list[int]) -> dict:
        indices = [self.offset + i for i in indices]
        examples, statuses, cut, drops = [], [], 0, []
        spans, empty = [0] * len(self.secrets or ()), 0
        for idx, doc, ids, labels, marker, roles in self._documents(batch, indices):
            drops.append(roles)
            empty += self.fmt != "text" and empty_replies(doc, self.settings.text_field, self.fmt) > 0
            if self.secrets:  # every string of every record is read only when the run names secrets
                spans = [a + b for a, b in zip(spans, secret_spans(doc, self.secrets))]
            try:
                k = document_k(doc, self.gcfg.k)
            except ValueError as e:
                raise ValueError(f"{self.source}: record {idx}: {e}") from None
            fitted, status, left_out = fit_document(ids, labels, k, self.settings.seq_len, marker, self.fmt != "text",
                                                    self.settings.long_chats)
            examples += fitted
            statuses.append(status)
            cut += left_out
        if indices:
            (self.fit_dir / f"{indices[0]}.json").write_text(json.dumps({"fit": fit_counts(statuses, cut) | {"empty_replies": empty},
                                                                         "template_drops": tally_drops(drops),
                                                                         "secret_spans": spans}))
        lengths = np.asarray([len(e["input_ids"]) for e in examples], dtype=np.int64)
        counts = _target_counts(examples, lengths, self.gcfg, indices[0] if indices else 0)
        out = {"input_ids": [np.asarray(e["input_ids"], dtype=np.int32) for e in examples],
               "labels": [np.asarray(e["labels"], dtype=np.int32) for e in examples],
               "goldfish_k": [e["goldfish_k"] for e in examples], "length": lengths, **counts}
        if self.secrets is not None:
            out["goldfish_protected"] = [np.asarray(e["goldfish_protected"], dtype=np.int32) for e in examples]
        return out


def _target_counts(examples: list[dict], lengths: np.ndarray, gcfg: GoldfishConfig, first_index: int) -> dict:
    """Per example: ``supervised`` targets and the targets the mask drops (``dropped``), plus, with
    protection, the protected supervised targets and the dropped ones among them; from one
    vectorized mask over the batch laid end to end (each example its own document)."""
    from goldfish.mask import goldfish_mask

    protected = examples and "goldfish_protected" in examples[0]
    names = ["supervised", "dropped"] + (["protected", "protected_dropped"] if protected else [])
    if not examples:
        return {n: np.zeros(0, np.int64) for n in names}
    ids = np.concatenate([e["input_ids"] for e in examples]).astype(np.int64)
    labels = np.concatenate([e["labels"] for e in examples]).astype(np.int64)
    doc_ids = np.repeat(np.arange(len(examples)), lengths)
    ks = np.asarray([e["goldfish_k"] for e in examples], dtype=np.float64)
    token_k = None if (ks == gcfg.k).all() else np.repeat(ks, lengths)
    generator = None
    if gcfg.strategy == "random":  # a seeded draw, so the reported counts are reproducible
        import torch

        generator = torch.Generator().manual_seed(gcfg.seed * 1_000_003 + first_index)
    marker = np.concatenate([e["goldfish_protected"] for e in examples]).astype(np.int64) if protected else None
    aligned = np.concatenate([e["goldfish_aligned"] for e in examples]).astype(np.int64) if "goldfish_aligned" in examples[0] else None
    drop = goldfish_mask(ids, gcfg, doc_ids=doc_ids, labels=labels, token_k=token_k, protected=marker, aligned=aligned,
                         generator=generator)
    offsets = np.cumsum(lengths) - lengths
    sup = labels != IGNORE_INDEX
    sup[offsets] = False  # an example's first token is no target
    flags = [sup, sup & drop] + ([sup & (marker != 0), sup & drop & (marker != 0)] if protected else [])
    return {n: np.add.reduceat(f.astype(np.int64), offsets) for n, f in zip(names, flags)}


class _PackRows:
    """Batched map over the packing plan: each (first, end) range of examples -> one packed row."""

    def __init__(self, examples, seq_len: int, pad_token_id: int):
        self.examples, self.seq_len, self.pad = examples, seq_len, pad_token_id

    def __call__(self, plan: dict) -> dict:
        lo, hi = plan["first"][0], plan["end"][-1]
        chunk = self.examples.select_columns([c for c in _EXAMPLE_COLUMNS if c in self.examples.column_names])[lo:hi]
        examples = [{k: chunk[k][i] for k in chunk} for i in range(hi - lo)]
        rows = [pack_row(examples[a - lo : b - lo], self.seq_len, self.pad) for a, b in zip(plan["first"], plan["end"])]
        return {k: [r[k] for r in rows] for k in rows[0]}


class _AddAligned:
    """Batched map: each example gains its ``goldfish_aligned`` column, and its drop counts follow it."""

    def __init__(self, aligned, gcfg: GoldfishConfig):
        self.aligned, self.gcfg = aligned, gcfg

    def __call__(self, batch: dict, indices: list[int]) -> dict:
        examples = [{k: batch[k][i] for k in batch} for i in range(len(indices))]
        for n, e in zip(indices, examples):
            e["goldfish_aligned"] = self.aligned.column(n, len(e["input_ids"]))
        lengths = np.asarray([len(e["input_ids"]) for e in examples], dtype=np.int64)
        return {"goldfish_aligned": [e["goldfish_aligned"] for e in examples],
                **_target_counts(examples, lengths, self.gcfg, indices[0] if indices else 0)}


def _align(examples, gcfg: GoldfishConfig, num_proc: int | None, tmp: Path, protect: bool):
    """(examples with a ``goldfish_aligned`` column, the rule's record for ``prepared.json``)."""
    from goldfish.align import ALIGN_VERSION
    from goldfish.data.near_duplicates import aligned_dataset

    aligned = aligned_dataset(examples, gcfg.h, gcfg.seed, gcfg.ignore_index, num_proc, str(tmp / "signatures.arrow"))
    examples = examples.map(_AddAligned(aligned, gcfg), batched=True, batch_size=1000, with_indices=True,
                            num_proc=num_proc if len(examples) >= 512 else None, features=_example_features(protect, True),
                            cache_file_name=str(tmp / "aligned.arrow"), desc="near-duplicates: align")
    return examples, {"rule": ALIGN_VERSION, **aligned.stats()}


_EXAMPLE_COLUMNS = ("input_ids", "labels", "goldfish_k", "goldfish_protected", "goldfish_aligned")


def prepare_dataset(sources: list[str], tokenizer, settings: DataSettings, gcfg: GoldfishConfig, secrets: Sequence = (),
                    num_proc: int | None = None, progress: bool = True, cache: str | Path | None = None) -> PreparedData:
    """Prepare (or reuse from the cache) the training rows of ``sources``; see the module docstring.

    ``secrets``: the ``goldfish.secrets.Secret``s to protect (those ``gcfg.protect`` names, loaded:
    ``goldfish.secrets.load_secrets``); ``gcfg.near_duplicates == "align"`` gives every example a
    ``goldfish_aligned`` column (goldfish-align-v1). ``cache``: the folder that holds prepared
    datasets (default ``$GOLDFISH_CACHE/prepared``).
    """
    import datasets

    from goldfish.cache import cache_dir, raise_if_no_space, remove_stale_temps

    start = time.time()
    for source in sources:
        if (src := resolve_source(source)).split is not None:
            logger.info("data: %s", src.describe())
    row_settings = {f.name: getattr(settings, f.name) for f in fields(DataSettings)}
    key = PreparedKey.of([source_identity(s) for s in sources], tokenizer, row_settings, gcfg, secrets)
    root = Path(cache or cache_dir() / "prepared")
    for stale in remove_stale_temps(root) if root.is_dir() else []:
        logger.info("prepared data: removed %s, left by a killed run", stale)
    final = root / key.digest
    if final.exists() and (reused := _reuse(final, time.time() - start)) is not None:
        return reused
    if not progress:
        datasets.disable_progress_bars()
    try:
        counts = _write_entry(final, key, sources, tokenizer, settings, gcfg, secrets, num_proc, start)
    except Exception as e:
        raise_if_no_space(e, root, "preparing data for the cache", "free space there, or point --data-cache (or "
                          "$GOLDFISH_CACHE) at a folder on another disk")
        raise
    logger.info("prepared data: %d examples, %d rows in %.1f s, cached at %s", counts["examples"], counts["rows"],
                time.time() - start, final)
    log_fitted(counts["documents"])
    _log_formats(counts)
    remove_superseded(root, key)
    record, train = load_verified(final)
    return PreparedData(train, record, final, False)


def _write_entry(final: Path, key: PreparedKey, sources: list[str], tokenizer, settings: DataSettings, gcfg: GoldfishConfig,
                 secrets, num_proc: int | None, start: float) -> dict:
    """Build the cache entry ``final`` in a temp folder and rename it into place (``atomic_dir``: a failed
    or killed build leaves no entry); returns its counts."""
    from goldfish.cache import atomic_dir

    with atomic_dir(final) as tmp:
        counts = _build(tmp, sources, tokenizer, settings, gcfg, secrets, num_proc if num_proc and num_proc > 1 else None)
        if [source_identity(s) for s in sources] != key.sources:
            raise ValueError(f"{', '.join(sources)}: changed while being prepared; run again once it is written")
        record = {**counts, "checks": {f: file_check(tmp / f) for f in counts["files"]}, **key.record(),
                  "prepare_seconds": round(time.time() - start, 2)}
        (tmp / "prepared.json").write_text(json.dumps(record, indent=2) + "\n")
    return counts


def _reuse(entry: Path, hashed: float) -> PreparedData | None:
    """The cache ``entry`` when it is sound, None (with a warning naming the damage) when it must be rebuilt."""
    try:
        record, train = load_verified(entry)
    except DamagedCache as e:
        logger.warning("prepared data: the cache %s is damaged (%s); rebuilding it", entry, e)
        return None
    logger.info("prepared data: reusing the cache %s (sources hashed in %.1f s)", entry, hashed)
    _log_formats(record)
    return PreparedData(train, record, entry, True)


def _build(tmp: Path, sources: list[str], tokenizer, settings: DataSettings, gcfg: GoldfishConfig, secrets,
           num_proc: int | None) -> dict:
    """Write the rows of ``sources`` into ``tmp`` (the Arrow files that make the entry; nothing else is
    left there); returns their counts (``prepared.json``'s), with ``files``: the files that hold them."""
    loaded = [load_source(source, tmp / f"source-{n}") for n, source in enumerate(sources)]
    # protection on: every example gets a marker (the run names secrets, or some records do)
    protect = bool(secrets) or any("protect" in ds.column_names for ds in loaded)
    if protect:
        require_offsets(tokenizer, "protected spans (--protect, or a record's 'protect')")
    examples, formats = _tokenize(tmp, sources, loaded, tokenizer, settings, gcfg, list(secrets) if protect else None, num_proc)
    near_duplicates = None
    if gcfg.near_duplicates == "align":
        examples, near_duplicates = _align(examples, gcfg, num_proc, tmp, protect)
    counts = _counts(examples) | {"near_duplicates": near_duplicates, "formats": formats}
    counts["documents"], counts["template_drops"], counts["secret_spans"] = _fitted(tmp / "fitted", settings, len(secrets))
    shutil.rmtree(tmp / "fitted")
    rows = (_pack(examples, settings.seq_len, tokenizer.pad_token_id, num_proc, tmp, protect, near_duplicates is not None)
            if settings.pack else examples)
    # The map outputs are the prepared dataset (no copy: the main process never reads the token
    # columns, so its memory stays flat however large the corpus); the rest is removed.
    counts["files"], counts["rows"] = [Path(f["filename"]).name for f in rows.cache_files], len(rows)
    for f in tmp.glob("*.arrow"):
        if f.name not in counts["files"]:
            f.unlink()
    for d in tmp.glob("source-*"):  # the sources' Arrow form: read again from the files next time
        shutil.rmtree(d)
    return counts


def _tokenize(tmp: Path, sources: list[str], loaded: list, tokenizer, settings: DataSettings, gcfg: GoldfishConfig, secrets,
              num_proc: int | None) -> tuple[object, dict]:
    """(the examples of every source, one Arrow dataset; the record format each source was read as).
    How each document was fitted goes to ``tmp/fitted/``; ``secrets`` None: no protection."""
    import datasets

    parts, formats = [], {}
    for n, (source, ds) in enumerate(zip(sources, loaded)):
        try:
            fmt = formats[source] = document_format(ds.column_names, settings.text_field, settings.format)
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from None
        slices = _slices(ds)
        (tmp / "fitted" / str(n)).mkdir(parents=True)
        for j, (offset, part) in enumerate(slices):
            # batch_size: one Arrow record batch a call; the main process maps every batch's header when it
            # opens the output (and the kernel reads ahead around it), so fewer, larger batches keep it flat
            parts.append(part.map(
                _Tokenize(tokenizer, fmt, settings, gcfg, source, secrets, offset, tmp / "fitted" / str(n)), batched=True,
                batch_size=1000, with_indices=True, remove_columns=ds.column_names,
                num_proc=num_proc if len(part) >= 512 else None, features=_example_features(secrets is not None),
                cache_file_name=str(tmp / f"tokenized-{n}-{j}.arrow"),
                desc=f"tokenize {source}" + (f" ({j + 1}/{len(slices)})" if len(slices) > 1 else "")))
    examples = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    if len(examples) == 0:
        raise ValueError("no training examples: every document is empty or has no supervised tokens")
    return examples, formats


def _fitted(fit_dir: Path, settings: DataSettings, secrets: int) -> tuple[dict, dict, list[int]]:
    """How the documents were fitted to ``seq_len`` (and ``empty_replies``: the records with an
    assistant reply of no text); the template drops: per role, the records with a
    message of it that the template left out (``records``) of the records with one (``of``), for the
    roles with any; and per run secret (in order; counts only, never the secret), its occurrences in
    the records' text. All summed over the map batches' files."""
    total, tallies, spans = fit_counts([], 0) | {"empty_replies": 0}, [], [0] * secrets
    for f in fit_dir.rglob("*.json"):
        batch = json.loads(f.read_text())
        for key, value in batch["fit"].items():
            total[key] += value
        tallies.append(batch["template_drops"])
        spans = [a + b for a, b in zip(spans, batch["secret_spans"])]
    return (total | {"seq_len": settings.seq_len, "long_chats": settings.long_chats}, dropped(tally_drops(tallies=tallies)),
            spans)


def _log_formats(record: dict) -> None:
    """One log line a source: the record format it was read as (detected, or --format)."""
    for source, fmt in record.get("formats", {}).items():
        logger.info("data: %s read as %s records", source, fmt)


def log_fitted(fitted: dict) -> None:
    """One log line on what did not fit in ``seq_len``, when anything did not; a warning with the
    records holding an empty assistant reply, when any do."""
    if fitted.get("empty_replies"):
        logger.warning("%d of %d records have an assistant reply with no text: each is trained as the end-of-turn tokens "
                       "only; drop those turns or mark them \"train\": false", fitted["empty_replies"],
                       sum(fitted[k] for k in ("whole", "split", "truncated", "dropped")))
    if fitted["split"] or fitted["truncated"] or fitted["dropped"]:
        logger.info("prepared data: of %d documents, %d fit in --seq-len %d, %d were split into chunks, %d truncated and %d "
                    "left out (--long-chats %s; text is split, never truncated); %d supervised targets are in no example",
                    sum(fitted[k] for k in ("whole", "split", "truncated", "dropped")), fitted["whole"], fitted["seq_len"],
                    fitted["split"], fitted["truncated"], fitted["dropped"], fitted["long_chats"],
                    fitted["supervised_targets_left_out"])


def _slices(ds) -> list[tuple[int, object]]:
    """(first record, slice) of contiguous slices of about SLICE_BYTES each. Each slice is mapped by
    its own pool of workers: a worker's reads of the memory-mapped source stay in its RSS (file pages)
    until it exits, so one pool over the whole source grows with the corpus; a pool a slice does not."""
    n = max(1, math.ceil(ds.data.nbytes / SLICE_BYTES))
    out, first = [], 0
    for i in range(n):
        part = ds.shard(num_shards=n, index=i, contiguous=True) if n > 1 else ds
        out.append((first, part))
        first += len(part)
    return out


# The Arrow type of each column goldfish writes, one definition for preparation and packing; a list of
# it where a row holds one value a token (goldfish_k: one a document in examples, one a token packed).
COLUMN_TYPES = {"input_ids": "int32", "labels": "int32", "position_ids": "int32", "goldfish_protected": "int32",
                "goldfish_k": "float64", "length": "int32", "supervised": "int64", "dropped": "int64", "protected": "int64",
                "protected_dropped": "int64", "goldfish_aligned": "int64"}
TOKEN_COLUMNS = frozenset({"input_ids", "labels", "position_ids", "goldfish_protected", "goldfish_aligned"})


def arrow_features(columns, per_token=TOKEN_COLUMNS):
    """``datasets.Features`` of ``columns`` by COLUMN_TYPES, lists for those in ``per_token``."""
    from datasets import Features, List, Value

    return Features({c: List(Value(COLUMN_TYPES[c])) if c in per_token else Value(COLUMN_TYPES[c]) for c in columns})


def _example_features(protect: bool, aligned: bool = False):
    protected = ["goldfish_protected", "protected", "protected_dropped"] if protect else []
    return arrow_features(["input_ids", "labels", "goldfish_k", "length", "supervised", "dropped", *protected,
                           *(["goldfish_aligned"] if aligned else [])])


def _counts(examples) -> dict:
    table = examples.data
    import pyarrow.compute as pc

    n_input = int(pc.sum(table.column("length")).as_py())
    n_sup = int(pc.sum(table.column("supervised")).as_py())
    n_drop = int(pc.sum(table.column("dropped")).as_py())
    counts = {"input_tokens": n_input, "supervised_targets": n_sup, "dropped_targets": n_drop, "kept_targets": n_sup - n_drop,
              "drop_rate": n_drop / max(n_sup, 1), "examples": len(examples)}
    if "protected" in table.column_names:
        counts["protected_targets"] = int(pc.sum(table.column("protected")).as_py())
        counts["protected_dropped"] = int(pc.sum(table.column("protected_dropped")).as_py())
    return counts


def _pack(examples, seq_len: int, pad_token_id: int, num_proc: int | None, tmp: Path, protect: bool, aligned: bool):
    from datasets import Dataset

    plan = pack_plan(np.asarray(examples.data.column("length")), seq_len)
    plan_ds = Dataset.from_dict({"first": [a for a, _ in plan], "end": [b for _, b in plan]})
    features = arrow_features(["input_ids", "labels", "goldfish_k", "position_ids", *(["goldfish_protected"] if protect else []),
                               *(["goldfish_aligned"] if aligned else [])], per_token=TOKEN_COLUMNS | {"goldfish_k"})
    return plan_ds.map(_PackRows(examples, seq_len, pad_token_id), batched=True, batch_size=64, remove_columns=["first", "end"],
                       num_proc=num_proc if len(plan) >= 256 else None, features=features,
                       cache_file_name=str(tmp / "packed.arrow"), desc="pack")
