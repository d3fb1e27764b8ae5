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
