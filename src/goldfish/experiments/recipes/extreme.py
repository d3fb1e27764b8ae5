"""The paper's "extreme" setting (Fig. 1) — what ``goldfish demo`` runs.

Continue training the base model for many epochs on a few documents with each strategy ("none" is
the standard loss), then audit the base (the control) and every run on those documents.
"""

from __future__ import annotations

import time
from pathlib import Path

from goldfish.audit import AuditConfig, run_audit
from goldfish.audit.report import add_examples
from goldfish.report import Report, histogram_png, settings_block
from goldfish.experiments.base import base_model_dir
from goldfish.experiments.config import ExtremeConfig
from goldfish.experiments.documents import gap_closed, run_metrics, strong_attacker, strong_attacker_lines, target_documents
from goldfish.experiments.reporting import closing_line, run_names, run_table, utility_table, write_summary
from goldfish.experiments.training import finetune, goldfish_config
from goldfish.experiments.utility import benchmarks, utility_figures

RUN_NAMES = {"none": "standard", "hash": "goldfish"}
BASE = "extreme"  # the base model the seeds share (experiments.base), or None: trained from scratch
CONFIG = ExtremeConfig
STANDARD_HEADLINE = (("verbatim", "exact_match_rate"), ("longest run (mean)", "longest_run_mean"),
                     ("held-out loss", "utility.heldout_loss"), ("verbatim in any sample", "sampled.any_verbatim_rate"))
RUN_HEADLINE = (*STANDARD_HEADLINE[:2], ("held-out loss change vs standard", "utility.heldout_loss_change"),
                *STANDARD_HEADLINE[2:], ("best-of-N longest run (mean)", "sampled.best_longest_run_mean"),
                ("(1000, 0.5)-discoverable", "extraction_probability.discoverable.1000.0.5"))


def headline(result: dict) -> list[tuple[str, str]]:
    """(label, dotted path) of the figures ``--seeds`` aggregates, for every run of ``result`` (the
    strategies trained) beside the standard loss and the control."""
    runs = [r for r in run_names(result) if r != "control"]
    return [(f"{run} {label}", f"{run}.{path}") for run in runs
            for label, path in (STANDARD_HEADLINE if run == "standard" else RUN_HEADLINE)] + [
        ("Rouge-L gap closed", "rouge_gap_closed")] + [
        (f"{run} word order", f"benchmarks.scores.{run}.goldfish_word_order.score") for run in ["control", *runs]
        if run != "standard"]


def run_name(strategy: str) -> str:
    return RUN_NAMES.get(strategy, strategy)


def run(cfg: ExtremeConfig) -> dict:
    """Train, audit, report. Writes models/, data/, audit/ and summary.json + report.* into cfg.out."""
    from transformers import AutoTokenizer

    from goldfish.models import from_pretrained

    start = time.time()
    out = Path(cfg.out)
    base = base_model_dir(cfg, "extreme")
    tokenizer = from_pretrained(AutoTokenizer, base)
    members, non_members = target_documents(cfg, tokenizer, out)
    runs = {"control": base}
    for strategy in cfg.strategies:
        runs[run_name(strategy)] = finetune(cfg, base, members, goldfish_config(cfg, strategy), out / "models" / run_name(strategy),
                                            cfg.epochs, cfg.lr, cfg.batch_size, seq_len=2 * cfg.doc_tokens)
    baseline = "standard" if "standard" in runs else "control"
    audit = run_audit(AuditConfig(
        models=[str(p) for p in runs.values()], names=list(runs), data=str(members), non_members=str(non_members),
        out=str(out / "audit"), prefix_len=cfg.prefix_len, suffix_len=cfg.suffix_len, batch_size=cfg.audit_batch,
        device=cfg.device, progress=cfg.progress, baseline=baseline, samples=cfg.samples, temperature=cfg.temperature,
        top_p=cfg.top_p,
    ))
    summary = run_metrics(audit)
    for name, figures in utility_figures(audit).items():
        summary[name]["utility"] = figures
    result = {"experiment": "extreme", **summary, "benchmarks": benchmarks(cfg, runs, baseline, out)}
    if "standard" in summary and "goldfish" in summary:
        c, s, g = (summary[n] for n in ("control", "standard", "goldfish"))
        result["rouge_gap_closed"] = gap_closed(c["rouge_l_mean"], s["rouge_l_mean"], g["rouge_l_mean"])
        result["rouge_gap_closed_tokens"] = gap_closed(c["rouge_l_tokens_mean"], s["rouge_l_tokens_mean"], g["rouge_l_tokens_mean"])
        result["longest_run_ratio"] = g["longest_run_mean"] / s["longest_run_mean"] if s["longest_run_mean"] else None
    result["wall_time_s"] = round(time.time() - start, 1)
    result["settings"] = cfg.to_dict() | {"base_model": str(base)}
    _write_report(result, audit, out)
    return result


def _write_report(result: dict, audit: dict, out: Path) -> None:
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
    report.heading("What the models still know")
    report.paragraph(
        f"Held-out loss: mean NLL per token on the {s['n_docs']} non-member documents (bootstrap 95% interval), and its "
        f"change against {result[runs[0]]['utility']['baseline']}; repeated 4-grams of the generations (the true suffixes: "
        f"{result[runs[0]]['utility']['true_repeated_4grams']:.3f}); accuracy ± stderr on the embedded benchmark tasks "
        "(lm-evaluation-harness, held-out text, chance 0.25). Flags: see goldfish audit.")
    report.table(*utility_table(result, runs))
    if result.get("rouge_gap_closed") is not None:
        report.paragraph(
            f"goldfish removes {100 * result['rouge_gap_closed']:.0f}% of the Rouge-L gap between standard and control "
            f"({100 * result['rouge_gap_closed_tokens']:.0f}% on token Rouge-L); its mean longest verbatim run is "
            f"{100 * result['longest_run_ratio']:.0f}% of the standard loss's."
        )
    strong_attacker(report, result, runs)
    hist = {name: [r["rouge_l"] for r in audit["rows"] if r["model"] == name and r["member"] and r["rouge_l"] is not None] for name in runs}
    report.image("rouge_l_hist.png", histogram_png(hist, "Rouge-L of generated vs true suffix", "Extraction after training on the documents"),
                 "Rouge-L per document, one histogram per run (paper Fig. 2 view)")
    report.heading("One example per run (green: reproduced, red: from the divergence on)")
    add_examples(report, audit["rows"], per_model=1)
    settings_block(report, result)
    write_summary(result, out)
    report.write(out)


def lines(result: dict) -> list:
    out = [run_table(result, run_names(result)), *strong_attacker_lines(result, run_names(result)),
           utility_table(result, run_names(result))]
    if result.get("rouge_gap_closed") is not None:
        out.append(f"goldfish removes {100 * result['rouge_gap_closed']:.0f}% of the standard-vs-control Rouge-L gap; "
                   f"mean longest verbatim run {100 * result['longest_run_ratio']:.0f}% of standard's")
    return out + [closing_line(result)]
