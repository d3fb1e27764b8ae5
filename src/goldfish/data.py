"""Training data: read documents, tokenize (plain text or chat with assistant-only labels), split
long documents, and pack with document boundaries.

A *document* is a dict with ``text`` (plain text) or ``messages`` (a chat: a list of
``{"role", "content"}``), and optionally ``goldfish`` (``false`` opts it out of the goldfish mask)
and ``goldfish_k`` (its own k). Sources: ``.jsonl`` files, ``.txt`` files (one document a file), a
folder of them, a HF dataset saved with ``save_to_disk``, or ``embedded:PART`` (the embedded corpus).

An *example* (what the collator sees) has ``input_ids``, ``labels`` (-100 where not supervised) and
``goldfish_k`` (one float per token; ``inf`` = never dropped), plus ``position_ids`` when packed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

IGNORE_INDEX = -100


def read_documents(source: str, text_field: str = "text") -> list[dict]:
    """Documents from a file, folder, saved HF dataset or ``embedded:PART`` (see module docstring).

    Raises ValueError for a missing source, no documents, or a record with neither ``text_field``
    nor ``messages``.
    """
    if source.startswith("embedded:"):
        from goldfish.experiments.corpus import corpus_part

        docs = [{"text": d["text"]} for d in corpus_part(source.split(":", 1)[1])]
        return _check_documents(docs, source, text_field)
    path = Path(source)
    if not path.exists():
        raise ValueError(f"data source {source} does not exist (give a .jsonl/.txt file, a folder, or embedded:PART)")
    if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
        docs = _read_saved_dataset(path)
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in (".jsonl", ".txt"))
        if not files:
            raise ValueError(f"folder {source} holds no .jsonl or .txt files")
        docs = [d for f in files for d in _read_file(f, text_field)]
    else:
        docs = _read_file(path, text_field)
    return _check_documents(docs, source, text_field)


def _read_file(path: Path, text_field: str) -> list[dict]:
    if path.suffix == ".txt":
        return [{text_field: path.read_text(encoding="utf-8")}]
    if path.suffix != ".jsonl":
        raise ValueError(f"{path}: unsupported file type {path.suffix!r}; use .jsonl (one JSON object a line) or .txt")
    docs = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    docs.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from None
    return docs


def _read_saved_dataset(path: Path) -> list[dict]:
    from datasets import DatasetDict, load_from_disk

    ds = load_from_disk(str(path))
    if isinstance(ds, DatasetDict):
        if "train" not in ds:
            raise ValueError(f"{path}: a DatasetDict without a 'train' split (has {list(ds)})")
        ds = ds["train"]
    return list(ds)


def _check_documents(docs: list, source: str, text_field: str) -> list[dict]:
    if not docs:
        raise ValueError(f"{source} holds no documents")
    for n, d in enumerate(docs):
        if not isinstance(d, dict) or (text_field not in d and "messages" not in d):
            keys = sorted(d) if isinstance(d, dict) else type(d).__name__
            raise ValueError(
                f"{source}: record {n} has no {text_field!r} or 'messages' field (has {keys}); "
                "use --text-field to name the text column"
            )
        if text_field in d and not isinstance(d[text_field], str):
            raise ValueError(f"{source}: record {n}: {text_field!r} must be a string")
        if "goldfish_k" in d and d["goldfish_k"] is not None and not (isinstance(d["goldfish_k"], (int, float)) and d["goldfish_k"] >= 2):
            raise ValueError(f"{source}: record {n}: goldfish_k must be a number >= 2, got {d['goldfish_k']!r}")
    if text_field != "text":
        docs = [{**d, "text": d.pop(text_field)} if text_field in d else d for d in (dict(d) for d in docs)]
    return docs


def document_k(doc: dict, default_k: float) -> float:
    """The k that applies to a document's tokens: its ``goldfish_k``, inf if ``goldfish`` is false."""
    if doc.get("goldfish") is False:
        return math.inf
    k = doc.get("goldfish_k")
    return float(k) if k is not None else float(default_k)


def tokenize_document(doc: dict, tokenizer) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of one document.

    text: the tokens followed by EOS, all supervised. messages: the tokenizer's chat template;
    only assistant tokens (the template's ``{% generation %}`` spans) are supervised.
    """
    if "messages" in doc:
        enc = tokenizer.apply_chat_template(
            doc["messages"], tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        ids, mask = list(enc["input_ids"]), list(enc["assistant_masks"])
        if not any(mask):
            raise ValueError("a chat document has no assistant tokens (does the chat template mark {% generation %}?)")
        return ids, [t if m else IGNORE_INDEX for t, m in zip(ids, mask)]
    ids = tokenizer(doc["text"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return ids, list(ids)


def build_examples(docs: list[dict], tokenizer, seq_len: int, default_k: float) -> list[dict]:
    """Tokenize documents and split each into chunks of at most ``seq_len`` tokens.

    Each chunk is its own document for the mask (its context starts at the chunk), so a document
    is masked the same way wherever it lands. Chunks without any supervised target are dropped.
    """
    examples = []
    for doc in docs:
        ids, labels = tokenize_document(doc, tokenizer)
        k = document_k(doc, default_k)
        for start in range(0, len(ids), seq_len):
            chunk_labels = labels[start : start + seq_len]
            if len(chunk_labels) > 1 and any(x != IGNORE_INDEX for x in chunk_labels[1:]):
                n = len(chunk_labels)
                examples.append({"input_ids": ids[start : start + seq_len], "labels": chunk_labels, "goldfish_k": [k] * n})
    if not examples:
        raise ValueError("no training examples: every document is empty or has no supervised tokens")
    return examples


def pack_examples(examples: list[dict], seq_len: int, pad_token_id: int) -> list[dict]:
    """Pack examples greedily, in order, into rows of exactly ``seq_len`` tokens.

    ``position_ids`` restart at 0 for each example (HF packing convention: the model then attends
    within documents only, and the goldfish mask sees the boundaries); the tail of a row is padding
    with label -100.
    """
    rows: list[dict] = []

    def empty() -> dict:
        return {"input_ids": [], "labels": [], "goldfish_k": [], "position_ids": []}

    def flush(row: dict) -> None:
        pad = seq_len - len(row["input_ids"])
        row["input_ids"] += [pad_token_id] * pad
        row["labels"] += [IGNORE_INDEX] * pad
        row["goldfish_k"] += [math.inf] * pad
        row["position_ids"] += list(range(pad))
        rows.append(row)

    cur = empty()
    for ex in examples:
        if cur["input_ids"] and len(cur["input_ids"]) + len(ex["input_ids"]) > seq_len:
            flush(cur)
            cur = empty()
        for key in ("input_ids", "labels", "goldfish_k"):
            cur[key] += ex[key]
        cur["position_ids"] += list(range(len(ex["input_ids"])))
    if cur["input_ids"]:
        flush(cur)
    return rows
