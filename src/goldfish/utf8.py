"""UTF-8 text files, read or checked, with errors that name the file, the line and the byte.

Below ``goldfish.secrets`` and ``goldfish.data`` alike (it imports nothing of goldfish), so both
read files the same way without importing each other.
"""

from __future__ import annotations

import codecs
from pathlib import Path


def _not_utf8(path: Path, line: int, byte: int, offset: int) -> ValueError:
    return ValueError(f"{path}:{line}: not UTF-8 (byte {byte:#04x} at offset {offset}); re-encode the file as UTF-8")


def read_utf8(path: Path) -> str:
    """The text of a file; ValueError naming the file, line and byte unless it is UTF-8."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _not_utf8(path, data[: e.start].count(b"\n") + 1, data[e.start], e.start) from None


def check_utf8(path: Path, chunk: int = 1 << 24) -> None:
    """Raise a ValueError naming the file, line and byte unless the file is UTF-8 (read in chunks)."""
    decoder, offset, lines = codecs.getincrementaldecoder("utf-8")(), 0, 1
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as e:
                where = max(0, e.start - len(decoder.getstate()[0]))
                raise _not_utf8(path, lines + block[:where].count(b"\n"), block[where], offset + where) from None
            offset += len(block)
            lines += block.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise ValueError(f"{path}: not UTF-8 (it ends inside a multi-byte character)") from None
