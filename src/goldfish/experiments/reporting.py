"""Reports of the experiments (built from ``goldfish.audit.report`` blocks), written atomically."""

from __future__ import annotations

import json
from pathlib import Path

from goldfish.audit.report import Report, add_examples, histogram_png, settings_block, versions
from goldfish.cache import write_text_atomic

RUN_COLUMNS = [("exact_match_rate", "verbatim"), ("token_match_rate", "token match"), ("rouge_l_mean", "Rouge-L"),
               ("rouge_l_tokens_mean", "Rouge-L (tokens)"), ("longest_run_mean", "longest run (mean)"),
               ("longest_run_max", "longest run (max)"), ("mia_loss_auc", "MIA loss AUC")]


def run_table(result: dict, runs: list[str]) -> tuple[list[str], list[list]]:
    headers = ["run"] + [label for _, label in RUN_COLUMNS]
    return headers, [[name] + [result[name].get(k, "") for k, _ in RUN_COLUMNS] for name in runs]


def write_summary(result: dict, out: Path) -> None:
    write_text_atomic(out / "summary.json", json.dumps(result | {"versions": versions()}, indent=2) + "\n")


def run_names(result: dict) -> list[str]:
    """Names of the runs in an experiment result (entries holding audit metrics)."""
    return [k for k, v in result.items() if isinstance(v, dict) and "rouge_l_mean" in v]


def write_extreme_report(result: dict, audit: dict, out: Path) -> None:
    runs = run_names(result)
    s = result["settings"]
    report = Report("goldfish demo: the extreme setting (paper Fig. 1)")
    report.paragraph(
        f"The base model was trained {s['epochs']:g} more epochs on {s['n_docs']} documents of {s['doc_tokens']} tokens "
        f"with each loss; then every model continued each document's {s['prefix_len']}-token prefix greedily for "
        f"{s['suffix_len']} tokens. 'control' is the base model, which never saw the documents. "
        f"Wall time {result['wall_time_s']:.0f} s, seed {s['seed']}."
    )
    report.table(*run_table(result, runs))
    if result.get("rouge_gap_closed") is not None:
        report.paragraph(
            f"goldfish removes {100 * result['rouge_gap_closed']:.0f}% of the Rouge-L gap between standard and control "
            f"({100 * result['rouge_gap_closed_tokens']:.0f}% on token Rouge-L); its mean longest verbatim run is "
            f"{100 * result['longest_run_ratio']:.0f}% of the standard loss's."
        )
    hist = {name: [r["rouge_l"] for r in audit["rows"] if r["model"] == name and r["member"] and r["rouge_l"] is not None] for name in runs}
    report.image("rouge_l_hist.png", histogram_png(hist, "Rouge-L of generated vs true suffix", "Extraction after training on the documents"),
                 "Rouge-L per document, one histogram per run (paper Fig. 2 view)")
    report.heading("One example per run (green: reproduced, red: from the divergence on)")
    add_examples(report, audit["rows"], per_model=1)
    settings_block(report, result)
    write_summary(result, out)
    report.write(out)
