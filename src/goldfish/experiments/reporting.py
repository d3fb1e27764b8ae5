"""Reports of the experiments (built from ``goldfish.audit.report`` blocks), written atomically."""

from __future__ import annotations

import json
from pathlib import Path

from goldfish.report import versions
from goldfish.cache import write_text_atomic

RUN_COLUMNS = [("exact_match_rate", "verbatim"), ("token_match_rate", "token match"), ("rouge_l_mean", "Rouge-L"),
               ("rouge_l_tokens_mean", "Rouge-L (tokens)"), ("longest_run_mean", "longest run (mean)"),
               ("longest_run_max", "longest run (max)"), ("mia_loss_auc", "MIA loss AUC")]


def run_table(result: dict, runs: list[str]) -> tuple[list[str], list[list]]:
    headers = ["run"] + [label for _, label in RUN_COLUMNS]
    return headers, [[name] + [result[name].get(k, "") for k, _ in RUN_COLUMNS] for name in runs]


def closing_line(result: dict) -> str:
    """The last line every recipe prints: wall time and where the report is."""
    return f"wall time {result['wall_time_s']:.0f} s; report: {Path(result['settings']['out']) / 'report.html'}"


def write_summary(result: dict, out: Path) -> None:
    write_text_atomic(out / "summary.json", json.dumps(result | {"versions": versions()}, indent=2) + "\n")


def run_names(result: dict) -> list[str]:
    """Names of the runs in an experiment result (entries holding audit metrics)."""
    return [k for k, v in result.items() if isinstance(v, dict) and "rouge_l_mean" in v]
