"""Reports of the experiments (built from ``goldfish.audit.report`` blocks), written atomically."""

from __future__ import annotations

import json
from pathlib import Path

from goldfish.report import versions, with_interval
from goldfish.cache import write_text_atomic

RUN_COLUMNS = [("exact_match_rate", "verbatim"), ("token_match_rate", "token match"), ("rouge_l_mean", "Rouge-L"),
               ("rouge_l_tokens_mean", "Rouge-L (tokens)"), ("longest_run_mean", "longest run (mean)"),
               ("longest_run_max", "longest run (max)"), ("mia_loss_auc", "MIA loss AUC")]


def run_table(result: dict, runs: list[str]) -> tuple[list[str], list[list]]:
    headers = ["run"] + [label for _, label in RUN_COLUMNS]
    return headers, [[name] + [result[name].get(k, "") for k, _ in RUN_COLUMNS] for name in runs]


def utility_table(result: dict, runs: list[str]) -> tuple[list[str], list[list]]:
    """Per run: held-out loss and its change against the baseline run, repeated 4-grams, each embedded
    benchmark's score ± stderr, and the flags (see goldfish.audit.summary)."""
    bench = result.get("benchmarks", {})
    tasks = bench.get("tasks", [])
    rows = []
    for name in runs:
        u = result[name]["utility"]
        baseline = name == u["baseline"]
        scores = bench.get("scores", {}).get(name, {})
        rows.append([name, with_interval(u["heldout_loss"], u["heldout_loss_ci"], "{:.3f}"),
                     "baseline" if baseline else with_interval(u["heldout_loss_change"], u["heldout_loss_change_ci"], "{:+.1%}"),
                     with_interval(u["repeated_4grams"], None, "{:.3f}"),
                     *(f"{scores[t]['score']:.3f} ± {scores[t]['stderr']:.3f}" if t in scores else "—" for t in tasks),
                     ", ".join(u["flags"]) or "—"])
    baseline = result[runs[0]]["utility"]["baseline"] if runs else ""
    return (["run", "held-out loss", f"Δ vs {baseline}", "repeated 4-grams", *(t.removeprefix("goldfish_") for t in tasks), "flags"],
            rows)


def closing_line(result: dict) -> str:
    """The last line every recipe prints: wall time and where the report is."""
    return f"wall time {result['wall_time_s']:.0f} s; report: {Path(result['settings']['out']) / 'report.html'}"


def write_summary(result: dict, out: Path) -> None:
    write_text_atomic(out / "summary.json", json.dumps(result | {"versions": versions()}, indent=2) + "\n")


def run_names(result: dict) -> list[str]:
    """Names of the runs in an experiment result (entries holding audit metrics)."""
    return [k for k, v in result.items() if isinstance(v, dict) and "rouge_l_mean" in v]
