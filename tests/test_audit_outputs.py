"""The audit's files are one set: a rerun replaces --out whole, and a run that fails while writing
leaves the previous set as it was (never a new results.jsonl beside an old summary.json)."""

import json

import pytest

from goldfish.audit import AuditConfig, run_audit
from goldfish.audit.report import AUDIT_FILES, Report


def _audit(memorized, data, out, suffix_len):
    model, _, _ = memorized
    return run_audit(AuditConfig(models=[str(model)], data=str(data), out=str(out), suffix_len=suffix_len, prefix_len=16,
                                 progress=False))


def _read(out):
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return summary, rows


def test_a_rerun_replaces_the_set_and_a_failed_write_keeps_the_old_one(tmp_path, memorized, monkeypatch):
    _, members, non_members = memorized
    out = tmp_path / "audit"
    _audit(memorized, members, out, 16)
    summary, rows = _read(out)
    assert summary["settings"]["data"] == str(members) and len(rows) == summary["models"]["model"]["documents"] == 4
    (out / "offsets.png").write_bytes(b"left by an older audit with --offsets")
    _audit(memorized, non_members, out, 8)
    summary, rows = _read(out)
    assert summary["settings"]["suffix_len"] == 8 and len(rows) == summary["models"]["model"]["documents"] == 12
    assert not (out / "offsets.png").exists()  # nothing of the older set survives beside the new one
    assert sorted(p.name for p in out.iterdir()) == sorted(f for f in AUDIT_FILES if f not in ("offsets.png", "prefix_lens.png"))
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def fail_halfway(self, folder):
        (folder / "report.md").write_text("half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Report, "write", fail_halfway)
    with pytest.raises(OSError, match="No space left"):
        _audit(memorized, members, out, 16)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["audit"]  # no temp folder left beside it
