"""Fault injection on the prepared-data cache: a preparation killed mid-map, Arrow files cut at a
record-batch boundary or mid-batch, a deleted Arrow file, a damaged prepared.json, sources edited
in place with their old size and modification time (or during the preparation), and a folder
source whose files change."""

import json
import logging
import os
from pathlib import Path

import pyarrow as pa
import pytest
from helpers import sigkill_when_ready

from goldfish import GoldfishConfig
from goldfish.data import build_examples, read_documents
from goldfish.data.prepare import DataSettings, prepare_dataset

SETTINGS = DataSettings(seq_len=64)


def _jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


def _texts(n: int, tag: str = "doc") -> list[str]:
    return [f"[{tag} {i}] a short document of a few words" for i in range(n)]


def _prepare(source, tokenizer, cache, **kw):
    return prepare_dataset([str(source)], tokenizer, SETTINGS, GoldfishConfig(), cache=cache, progress=False, **kw)


def _rows(prepared) -> list[dict]:
    return [dict(r) for r in prepared.train]


def _want(source, tokenizer) -> list[dict]:
    return build_examples(read_documents(str(source)), tokenizer, SETTINGS.seq_len, 4)


def _rewrite_keeping_stat(path: Path, texts: list[str]) -> None:
    """Rewrite ``path`` and give it back its old modification time (as cp -p, rsync -t, tar x do)."""
    st = path.stat()
    _jsonl(path, texts)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _batch_ends(path: Path) -> list[int]:
    """Byte offsets at which each record batch of an Arrow stream file ends."""
    ends = []
    with pa.OSFile(str(path)) as f:
        reader = pa.ipc.MessageReader.open_stream(f)
        while True:
            try:
                message = reader.read_next_message()
            except StopIteration:
                return ends
            if message.type == "record batch":
                ends.append(f.tell())


def _temps(root: Path) -> list[Path]:
    return [p for p in root.glob(".*.tmp") if p.is_dir()]


@pytest.mark.parametrize("edit", ["same size", "fewer records"])
def test_a_source_rewritten_with_its_old_mtime_gives_the_new_examples(tmp_path, tokenizer, monkeypatch, edit):
    monkeypatch.setenv("GOLDFISH_CACHE", str(tmp_path / "home"))
    src = _jsonl(tmp_path / "d.jsonl", _texts(40))
    first = _prepare(src, tokenizer, tmp_path / "c")
    new = _texts(40, "new") if edit == "same size" else _texts(10, "fresh")
    before = src.stat()
    _rewrite_keeping_stat(src, new)
    after = src.stat()
    assert after.st_mtime_ns == before.st_mtime_ns and (after.st_size == before.st_size) == (edit == "same size")
    second = _prepare(src, tokenizer, tmp_path / "c")
    assert not second.reused and second.path != first.path
    assert _rows(second) == _want(src, tokenizer) and second.counts["examples"] == len(new)
    assert not first.path.exists()  # the entry of the superseded content is removed
    assert not (tmp_path / "home" / "datasets").exists()  # no datasets cache underneath that could serve old content


def test_a_folder_source_whose_files_change_gives_the_new_examples(tmp_path, tokenizer):
    folder = tmp_path / "corpus"
    folder.mkdir()
    _jsonl(folder / "a.jsonl", _texts(20, "a"))
    _jsonl(folder / "b.jsonl", _texts(20, "b"))
    seen = [_prepare(folder, tokenizer, tmp_path / "c")]
    for change in ("edit in place", "add a file", "remove a file"):
        if change == "edit in place":
            _rewrite_keeping_stat(folder / "b.jsonl", _texts(20, "B"))
        elif change == "add a file":
            _jsonl(folder / "c.jsonl", _texts(5, "c"))
        else:
            (folder / "a.jsonl").unlink()
        seen.append(_prepare(folder, tokenizer, tmp_path / "c"))
        assert not seen[-1].reused and seen[-1].path != seen[-2].path, change
        assert _rows(seen[-1]) == _want(folder, tokenizer), change
    assert _prepare(folder, tokenizer, tmp_path / "c").reused


def test_a_source_edited_while_it_is_prepared_leaves_no_entry(tmp_path, tokenizer, monkeypatch):
    from goldfish.data import prepare

    src = _jsonl(tmp_path / "d.jsonl", _texts(40))
    tokenize = prepare._Tokenize.__call__

    def edit_then_tokenize(self, batch, indices):
        _jsonl(src, _texts(40, "edited"))  # after the key was computed, before the entry is written
        return tokenize(self, batch, indices)

    monkeypatch.setattr(prepare._Tokenize, "__call__", edit_then_tokenize)
    with pytest.raises(ValueError, match=f"{src}: changed while being prepared"):
        _prepare(src, tokenizer, tmp_path / "c")
    assert not list((tmp_path / "c").iterdir())


def test_other_settings_of_the_same_source_keep_their_entry(tmp_path, tokenizer):
    src = _jsonl(tmp_path / "d.jsonl", _texts(30))
    short = prepare_dataset([str(src)], tokenizer, DataSettings(seq_len=32), GoldfishConfig(), cache=tmp_path / "c", progress=False)
    _prepare(src, tokenizer, tmp_path / "c")
    _jsonl(src, _texts(30, "edited"))
    _prepare(src, tokenizer, tmp_path / "c")
    assert short.path.is_dir()  # only entries of the same settings are superseded by new content


def _cut_at_batch_boundary(entry: Path) -> None:
    f = entry / "tokenized-0-0.arrow"
    ends = _batch_ends(f)
    assert len(ends) >= 2  # the cut leaves whole batches: without checks it would load with fewer rows
    os.truncate(f, ends[0])


def _cut_mid_batch(entry: Path) -> None:
    f = entry / "tokenized-0-0.arrow"
    ends = _batch_ends(f)
    os.truncate(f, (ends[0] + ends[1]) // 2)


def _delete_arrow(entry: Path) -> None:
    (entry / "tokenized-0-0.arrow").unlink()


def _garble_record(entry: Path) -> None:
    (entry / "prepared.json").write_bytes(b"\x00\xff garbage")


def _cut_record(entry: Path) -> None:
    text = (entry / "prepared.json").read_text()
    (entry / "prepared.json").write_text(text[: len(text) // 2])


def _delete_record(entry: Path) -> None:
    (entry / "prepared.json").unlink()


@pytest.mark.parametrize("damage,reason", [
    (_cut_at_batch_boundary, "bytes, "), (_cut_mid_batch, "bytes, "), (_delete_arrow, "tokenized-0-0.arrow is missing"),
    (_garble_record, "prepared.json cannot be read"), (_cut_record, "prepared.json cannot be read"),
    (_delete_record, "prepared.json is missing"),
])
def test_a_damaged_cache_entry_is_rebuilt_with_a_warning_never_used(tmp_path, tokenizer, caplog, damage, reason):
    src = _jsonl(tmp_path / "d.jsonl", _texts(2500))
    first = _prepare(src, tokenizer, tmp_path / "c")
    want = _rows(first)
    damage(first.path)
    with caplog.at_level(logging.WARNING, logger="goldfish"):
        second = _prepare(src, tokenizer, tmp_path / "c")
    assert f"the cache {first.path} is damaged" in caplog.text and reason in caplog.text and "rebuilding it" in caplog.text
    assert not second.reused and second.path == first.path
    assert second.counts["rows"] == len(want) == 2500 and _rows(second) == want
    assert _prepare(src, tokenizer, tmp_path / "c").reused  # the rebuilt entry is whole again
    assert not _temps(tmp_path / "c")


def test_row_count_check_catches_a_same_size_file_with_fewer_rows(tmp_path, tokenizer, caplog):
    """An Arrow file replaced by another of the same size but fewer rows (what a size check misses)."""
    src = _jsonl(tmp_path / "d.jsonl", _texts(2500))
    first = _prepare(src, tokenizer, tmp_path / "c")
    record = json.loads((first.path / "prepared.json").read_text())
    f = first.path / "tokenized-0-0.arrow"
    record["checks"][f.name]["rows"] += 1  # as if one row had been lost since it was written
    (first.path / "prepared.json").write_text(json.dumps(record))
    with caplog.at_level(logging.WARNING, logger="goldfish"):
        second = _prepare(src, tokenizer, tmp_path / "c")
    assert "holds 2500 rows, 2501 when it was written" in caplog.text and not second.reused


CHILD = """
import sys, time
from goldfish import GoldfishConfig
from goldfish.data import prepare
from goldfish.embedded.tiny import load_embedded_tokenizer

tokenize = prepare._Tokenize.__call__
calls = []
def stall(self, batch, indices):  # each worker: write its first batch, then hang in the second
    calls.append(1)
    if len(calls) == 2:
        open(sys.argv[2], "a").close()
        time.sleep(600)
    return tokenize(self, batch, indices)
prepare._Tokenize.__call__ = stall
prepare.prepare_dataset([sys.argv[1]], load_embedded_tokenizer(), prepare.DataSettings(seq_len=64), GoldfishConfig(),
                        num_proc=2, progress=False, cache=sys.argv[3])
"""


def test_a_preparation_killed_mid_map_leaves_nothing_that_is_used_and_its_temp_folder_goes(tmp_path, tokenizer, caplog):
    src = _jsonl(tmp_path / "d.jsonl", _texts(4000))
    cache, marker = tmp_path / "c", tmp_path / "stalled"
    sigkill_when_ready(["-c", CHILD, str(src), str(marker), str(cache)], marker, "its second map batch", timeout=120)
    (left,) = _temps(cache)
    assert list(left.glob("*.arrow")) or list(left.rglob("*.arrow"))  # it was killed with output half written
    assert not [p for p in cache.iterdir() if not p.name.startswith(".")]  # no entry to be mistaken for a whole one
    with caplog.at_level(logging.INFO, logger="goldfish"):
        rerun = _prepare(src, tokenizer, cache)
    assert f"removed {left}, left by a killed run" in caplog.text
    assert not rerun.reused and rerun.counts["rows"] == 4000 and _rows(rerun) == _want(src, tokenizer)
    assert not _temps(cache) and not left.exists()
