"""Data sources as Arrow datasets (Hugging Face ``datasets``: memory-mapped).

A source is a file (``.jsonl``, ``.json`` = JSON lines or an array of records, ``.parquet``,
``.csv``, ``.txt`` = one document a file), a folder of such files (read recursively, all of one
kind of table or text), a dataset saved with ``save_to_disk`` (its ``train`` split if a
DatasetDict), or ``embedded:PART`` (the embedded corpus).

``source_identity`` names a source by its content (the sha256 of every file it reads), so what is
keyed by it can never be served from older content. ``load_source`` converts files to Arrow in a
fresh folder of each call: ``datasets``' own cache knows local files by path and modification time
only, so it is never reused (a file rewritten with its old modification time would be read as it
was).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
SUFFIXES = (*BUILDERS, ".txt")
SAVED = ("dataset_info.json", "dataset_dict.json", "state.json")  # a save_to_disk folder holds one of these


def source_files(source: str) -> tuple[str, list[Path]]:
    """(kind, files) of a file or folder source: kind ``"saved"`` (a save_to_disk folder; files: all
    of them), ``".txt"``, or the ``datasets`` builder of its table files (``"json"``, ``"parquet"``,
    ``"csv"``); files sorted by path. Raises ValueError when the source is missing, holds no
    supported file, mixes kinds, or has an empty file."""
    path = Path(source)
    if not path.exists():
        raise ValueError(f"data source {source} does not exist (give a {'/'.join(SUFFIXES)} file, a folder, "
                         "a save_to_disk dataset, or embedded:PART)")
    if path.is_dir() and any((path / f).exists() for f in SAVED):
        return "saved", sorted(p for p in path.rglob("*") if p.is_file())
    files = sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file()) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"folder {source} holds no {', '.join(SUFFIXES)} files")
    kinds = {p.suffix if p.suffix == ".txt" else BUILDERS.get(p.suffix) for p in files}
    if None in kinds:
        raise ValueError(f"{source}: unsupported file type {path.suffix!r}; use one of {', '.join(SUFFIXES)}")
    if len(kinds) > 1:
        raise ValueError(f"folder {source} mixes file kinds ({', '.join(sorted(k for k in kinds))}); give each kind as its own --data")
    for f in files:
        if f.stat().st_size == 0:
            raise ValueError(f"{f} is empty: it holds no documents")
    return kinds.pop(), files


def source_identity(source: str) -> dict:
    """What a source's documents are made of: ``{"source": absolute path, "kind", "files": [[name
    relative to the source, bytes, sha256], ...]}``, or for ``embedded:PART`` ``{"source",
    "corpus": fingerprint}``. Reads every file once (sha256 streams at about 1 GB/s)."""
    if source.startswith("embedded:"):
        from goldfish.embedded.corpus import corpus_fingerprint

        return {"source": source, "corpus": corpus_fingerprint()}
    kind, files = source_files(source)
    path = Path(source)
    out = []
    for f in files:
        with f.open("rb") as fh:
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
        out.append([str(f.relative_to(path)) if path.is_dir() else f.name, f.stat().st_size, digest])
    return {"source": str(path.resolve()), "kind": kind, "files": out}


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
    kind, files = source_files(source)
    if kind == "saved":
        ds = load_from_disk(source)
        if isinstance(ds, DatasetDict):
            if "train" not in ds:
                raise ValueError(f"{source}: a DatasetDict without a 'train' split (has {list(ds)})")
            ds = ds["train"]
        return _non_empty(ds, source)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True)
    ds = _text_files(files, work_dir) if kind == ".txt" else _table_files(kind, files, work_dir)
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
            _check_utf8(f)
            with f.open("rb") as fh:
                head = fh.read(4096).lstrip()
            if f.suffix == ".jsonl" and head and not head.startswith(b"{"):
                _explain_unreadable(f, builder)  # raises: a JSON line must be an object
    try:
        return load_dataset(builder, data_files=[str(f) for f in files], split="train", cache_dir=str(work_dir))
    except Exception as e:  # datasets wraps the reader's error; find the precise cause for the message
        for f in files:
            _explain_unreadable(f, builder)
        raise ValueError(f"{', '.join(map(str, files))}: could not be read as {builder}: {e.__cause__ or e}") from e


def read_utf8(path: Path) -> str:
    """The text of a file; ValueError naming the file, line and byte unless it is UTF-8."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not UTF-8 (byte {data[e.start]:#04x} at offset {e.start}); "
                         "re-encode the file as UTF-8") from None


def _check_utf8(path: Path, chunk: int = 1 << 24) -> None:
    """Raise a ValueError naming the file, line and byte unless the file is UTF-8 (read in chunks)."""
    import codecs

    decoder, offset, lines = codecs.getincrementaldecoder("utf-8")(), 0, 1
    with path.open("rb") as f:
        while block := f.read(chunk):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as e:
                where = max(0, e.start - len(decoder.getstate()[0]))
                line = lines + block[:where].count(b"\n")
                raise ValueError(f"{path}:{line}: not UTF-8 (byte {block[where]:#04x} at offset "
                                 f"{offset + where}); re-encode the file as UTF-8") from None
            offset += len(block)
            lines += block.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise ValueError(f"{path}: not UTF-8 (it ends inside a multi-byte character)") from None


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
