"""Data sources as Arrow datasets (Hugging Face ``datasets``: memory-mapped).

A source is a file (``.jsonl``, ``.json`` = JSON lines or an array of records, ``.parquet``,
``.csv``, ``.txt`` = one document a file), a folder of such files (read recursively, all of one
kind of table or text), a dataset saved with ``save_to_disk``, or ``embedded:PART`` (the embedded
corpus). Splits: a ``save_to_disk`` DatasetDict, or a folder whose file or folder names name splits
as on the Hugging Face Hub (``train``, ``validation``/``valid``/``dev``/``val``, ``test``/``eval``
...: ``datasets``' own rule), is read one split at a time: ``PATH:SPLIT``, ``train`` when none is
given (``resolve_source`` says which were left out).

``source_identity`` names a source by its content (the sha256 of every file it reads), so what is
keyed by it can never be served from older content. ``load_source`` converts files to Arrow in a
fresh folder of each call: ``datasets``' own cache knows local files by path and modification time
only, so it is never reused (a file rewritten with its old modification time would be read as it
was).
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from goldfish.utf8 import check_utf8, read_utf8

BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
SUFFIXES = (*BUILDERS, ".txt")
SAVED = ("dataset_info.json", "dataset_dict.json", "state.json")  # a save_to_disk folder holds one of these


@dataclass(frozen=True)
class Source:
    """A source resolved (``resolve_source``): what it reads, and which split of which."""

    spec: str  # as given (``PATH``, ``PATH:SPLIT`` or ``embedded:PART``)
    path: str  # the absolute path, resolved once here (or the spec of an embedded part)
    kind: str  # "embedded", "saved" (a save_to_disk folder), ".txt", or the datasets builder: "json", "parquet", "csv"
    files: tuple[Path, ...] = ()  # every file it reads, sorted
    split: str | None = None  # the split read (None: the source has no splits)
    splits: tuple[str, ...] = ()  # all its splits

    def describe(self) -> str:
        """A log line's worth: the split read and the ones left out."""
        if self.split is None:
            return self.spec
        others = [s for s in self.splits if s != self.split]
        return f"{self.path} split {self.split!r}" + (f" (not read: {', '.join(others)})" if others else "")


def split_spec(spec: str) -> tuple[str, str | None]:
    """(path, split) of ``PATH:SPLIT``; (spec, None) when ``spec`` itself exists or names no existing path."""
    if spec.startswith("embedded:") or Path(spec).exists() or ":" not in spec:
        return spec, None
    head, _, split = spec.rpartition(":")
    return (head, split) if Path(head).exists() else (spec, None)


def _hub_splits(path: Path) -> dict[str, list[Path]]:
    """{split: data files} of a folder whose names name splits (``datasets``' rule), {} otherwise;
    ValueError naming a data file of such a folder that is in no split (it would never be read)."""
    from datasets.data_files import DataFilesDict, get_data_patterns

    patterns = get_data_patterns(str(path))
    if list(patterns.values()) == [["**"]]:  # no split names: one undivided folder
        return {}
    found = DataFilesDict.from_patterns(patterns, base_path=str(path))
    splits = {str(split): sorted(Path(f).resolve() for f in files if Path(f).suffix in SUFFIXES) for split, files in found.items()}
    placed = {f.resolve() for files in splits.values() for f in files}
    extra = [p for p in sorted(path.rglob("*")) if p.suffix in SUFFIXES and p.is_file() and p.resolve() not in placed
             and not any(part.startswith(".") for part in p.relative_to(path).parts)]
    if extra:
        raise ValueError(f"{path}: {extra[0].relative_to(path)}" + (f" and {len(extra) - 1} other file(s)" if len(extra) > 1 else "")
                         + f" in no split: the folder's names name the splits {', '.join(splits)}, and a file whose name names "
                         "none is never read; rename it into a split (e.g. train-NAME) or move it out")
    return splits


def resolve_source(spec: str) -> Source:
    """The files and split ``spec`` reads. Raises ValueError when the source is missing, holds no
    supported file, mixes kinds, has an empty file, or names a split it does not have."""
    if spec.startswith("embedded:"):
        return Source(spec, spec, "embedded")
    source, split = split_spec(spec)
    path = Path(source).resolve()  # every path below is absolute: files, splits and identities agree
    if not path.exists():
        raise ValueError(f"data source {source} does not exist (give a {'/'.join(SUFFIXES)} file, a folder, "
                         "a save_to_disk dataset, or embedded:PART)")
    if path.is_dir() and any((path / f).exists() for f in SAVED):
        splits = tuple(json.loads((path / "dataset_dict.json").read_text())["splits"]) if (path / "dataset_dict.json").is_file() else ()
        split = _pick_split(source, split, splits)
        root = path / split if split else path
        files = [f for f in (path / "dataset_dict.json",) if split] + sorted(p for p in root.rglob("*") if p.is_file())
        return Source(spec, str(path), "saved", tuple(files), split, splits)
    by_split = _hub_splits(path) if path.is_dir() else {}
    split = _pick_split(source, split, tuple(by_split))
    if split is not None:
        files = by_split[split]
    else:
        files = sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file()) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"folder {source} holds no {', '.join(SUFFIXES)} files" + (f" in split {split!r}" if split else ""))
    kinds = {p.suffix if p.suffix == ".txt" else BUILDERS.get(p.suffix) for p in files}
    if None in kinds:
        raise ValueError(f"{source}: unsupported file type {path.suffix!r}; use one of {', '.join(SUFFIXES)}")
    if len(kinds) > 1:
        raise ValueError(f"folder {source} mixes file kinds ({', '.join(sorted(k for k in kinds))}); give each kind as its own --data")
    for f in files:
        if f.stat().st_size == 0:
            raise ValueError(f"{f} is empty: it holds no documents")
    return Source(spec, str(path), kinds.pop(), tuple(files), split, tuple(by_split))


def _pick_split(source: str, split: str | None, splits: tuple[str, ...]) -> str | None:
    """The split to read: the one named, else ``train``; None for a source without splits."""
    if not splits:
        if split is not None:
            raise ValueError(f"{source}:{split}: {source} has no splits (a save_to_disk DatasetDict or a folder of "
                             "train/validation/test files has)")
        return None
    if split is None:
        if "train" not in splits:
            raise ValueError(f"{source} has the splits {', '.join(splits)} and no 'train'; name one: {source}:SPLIT")
        return "train"
    if split not in splits:
        raise ValueError(f"{source} has no split {split!r} (it has {', '.join(splits)})")
    return split


def source_identity(source: str) -> dict:
    """What a source's documents are made of: ``{"source": absolute path, "kind", "files": [[name
    relative to the source, bytes, sha256], ...]}``, or for ``embedded:PART`` ``{"source",
    "corpus": fingerprint}``. Reads every file once (sha256 streams at about 1 GB/s)."""
    if source.startswith("embedded:"):
        from goldfish.embedded.corpus import corpus_fingerprint

        return {"source": source, "corpus": corpus_fingerprint()}
    src = resolve_source(source)
    path = Path(src.path)
    out = []
    for f in src.files:
        with f.open("rb") as fh:
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
        out.append([str(f.relative_to(path)) if path.is_dir() else f.name, f.stat().st_size, digest])
    return {"source": str(path), "kind": src.kind, "split": src.split, "files": out}


def shared_content(a: dict, b: dict) -> int:
    """How many files of source ``b`` hold content (by sha256) that source ``a`` holds too, both as
    ``source_identity`` gives them; an embedded part and a source of no files share their all (1) or nothing."""
    if "files" not in a or "files" not in b:
        return int(a == b)
    digests = {digest for _, _, digest in a["files"]}
    return sum(digest in digests for _, _, digest in b["files"])


def load_source(source: str, work_dir: str | Path):
    """The documents of one source as a ``datasets.Dataset`` (see module docstring).

    ``work_dir``: a folder that does not exist yet, made here for the Arrow form of file sources
    (unused for save_to_disk folders and embedded parts); the dataset reads from it, so the caller
    removes it once done. Raises ValueError naming the file (and line, for JSON lines) when it is
    missing, empty, not UTF-8 or not valid JSON/CSV/parquet.
    """
    from datasets import Dataset, DatasetDict, load_from_disk

    if source.startswith("embedded:"):
        from goldfish.embedded.corpus import corpus_part

        return Dataset.from_list([{"text": d["text"]} for d in corpus_part(source.split(":", 1)[1])])
    src = resolve_source(source)
    if src.kind == "saved":
        ds = load_from_disk(src.path)
        return _non_empty(ds[src.split] if isinstance(ds, DatasetDict) else ds, source)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True)
    ds = _text_files(list(src.files), work_dir) if src.kind == ".txt" else _table_files(src.kind, list(src.files), work_dir)
    return _non_empty(ds, source)


def _non_empty(ds, source):
    if len(ds) == 0:
        raise ValueError(f"{source} holds no documents")
    return ds


def _read_text_files(files):
    for f in files:
        yield {"text": read_utf8(Path(f))}


def _text_files(files: list[Path], work_dir: Path):
    from datasets import Dataset

    return Dataset.from_generator(_read_text_files, gen_kwargs={"files": [str(f.resolve()) for f in files]}, cache_dir=str(work_dir))


def _table_files(builder: str, files: list[Path], work_dir: Path):
    from datasets import load_dataset

    if builder != "parquet":  # pyarrow reads invalid UTF-8 without complaint; the error would come later, nameless
        for f in files:
            check_utf8(f)
            with f.open("rb") as fh:
                head = fh.read(4096).lstrip()
            if f.suffix == ".jsonl" and head and not head.startswith(b"{"):
                _explain_unreadable(f, builder)  # raises: a JSON line must be an object
    try:
        ds = load_dataset(builder, data_files=[str(f) for f in files], split="train", cache_dir=str(work_dir))
    except Exception as e:  # datasets wraps the reader's error; find the precise cause for the message
        for f in files:
            _explain_unreadable(f, builder)
        raise ValueError(f"{', '.join(map(str, files))}: could not be read as {builder}: {e.__cause__ or e}") from e
    if builder == "json" and "goldfish_k" in ds.column_names and getattr(ds.features["goldfish_k"], "dtype", None) != "string":
        for f in files:
            _refuse_string_numbers(f)
    return ds


_STRING_K = re.compile(rb'(?<!\\)"goldfish_k"\s*:\s*"')  # a key (a quote inside a JSON string is escaped) with a string value


def _refuse_string_numbers(path: Path) -> None:
    """ValueError naming the file and line of a ``"goldfish_k": "8"``. A column of numbers and numeric
    strings reaches Arrow as numbers (``datasets`` falls back to pandas, which converts them), so the
    strings a column of strings alone would be refused for must be found in the file itself."""
    import mmap

    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:  # not read into memory
        if (m := _STRING_K.search(data)) is not None:
            line = data[: m.start()].count(b"\n") + 1
            raise ValueError(f"{path}:{line}: goldfish_k must be a JSON number (e.g. 8), not a string")


def _explain_unreadable(path: Path, builder: str) -> None:
    """Raise a ValueError naming the file, line and reason, if the file is not valid UTF-8 / JSON."""
    if builder == "parquet":
        return
    text = read_utf8(path)
    if builder != "json":
        return
    if path.suffix == ".json" and text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
        if not all(isinstance(r, dict) for r in records):
            raise ValueError(f"{path}: a JSON array of records must hold objects only")
        return
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{n}: a JSON line must be an object (a record), got {type(record).__name__}")


def read_documents(source: str, text_field: str = "text") -> list[dict]:
    """All documents of a source as dicts (for small sets: audits, tests); checks the format."""
    from goldfish.data.tokenize import document_format

    with tempfile.TemporaryDirectory(prefix="goldfish-read.") as work:
        ds = load_source(source, Path(work) / "arrow")
        try:
            document_format(ds.column_names, text_field)
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from None
        return [{k: v for k, v in d.items() if v is not None} for d in ds]
