"""goldfish eval's table and verdict (the lm-eval run itself is tested where lm-eval is installed)."""

from goldfish.eval import compare, score_rows, verdict_line


def _result(shift: float) -> dict:
    scores = {name: {"cloze": {"items": 100, "metrics": {
        "acc": {"score": 0.6 - d, "stderr": 0.03}, "acc_norm": {"score": 0.6 - d, "stderr": 0.03},
        "f1": {"score": 0.5, "stderr": 0.02}}}} for name, d in (("standard", 0.0), ("goldfish", shift))}
    return {"models": scores, "vs_baseline": compare(scores, "standard"), "baseline": "standard"}


def test_equal_metrics_share_a_row_and_the_verdict_reads_the_stderr():
    headers, rows = score_rows(_result(0.01))
    assert [r[2] for r in rows] == ["acc = acc_norm", "f1"] * 2 and rows[2][5] == "-0.010 ± 0.042"
    assert verdict_line(_result(0.01)) == "no model below standard by more than 2 standard errors on any task"
    assert verdict_line(_result(0.1)) == "below standard by more than 2 standard errors: goldfish on cloze (-0.100 ± 0.042)"


def _eval(memorized, out, *extra):
    from goldfish.cli import main

    return main(["eval", "--model", str(memorized[0]), "--tasks", "goldfish_cloze", "--limit", "4", "--no-progress",
                 "--out", str(out), *extra])


def test_eval_checks_its_out_folder_before_it_evaluates(tmp_path, memorized, monkeypatch, capsys):
    import goldfish.eval

    def never(*a, **k):
        raise AssertionError("evaluated before --out was checked")

    monkeypatch.setattr(goldfish.eval, "evaluate_model", never)
    (tmp_path / "file").write_text("x")
    assert _eval(memorized, tmp_path / "file") == 2
    assert "is a file" in capsys.readouterr().err
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    assert _eval(memorized, tmp_path / "mine") == 2
    assert "holds files that are not goldfish eval's (notes.txt)" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"


def test_eval_writes_its_files_as_one_set_and_its_arrow_files_in_the_goldfish_cache(tmp_path, memorized, monkeypatch):
    """A run killed between its files leaves the previous set whole; the ``datasets`` cache of the
    embedded tasks lies under $GOLDFISH_CACHE, none in the ``datasets`` library's own cache."""
    import os
    from pathlib import Path

    import datasets.config

    import goldfish.report
    from goldfish.eval import EVAL_FILES

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets")
    out = tmp_path / "out"
    assert _eval(memorized, out) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(EVAL_FILES)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert list(Path(os.environ["GOLDFISH_CACHE"], "datasets").rglob("*.arrow"))
    assert not list((tmp_path / "hf-datasets").rglob("*.arrow"))

    def killed(self, folder):
        raise KeyboardInterrupt

    monkeypatch.setattr(goldfish.report.Report, "write", killed)
    try:
        _eval(memorized, out, "--limit", "3")
    except KeyboardInterrupt:
        pass
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
