"""The paper's duplicated-documents setting (Fig. 2): pretrain from the tiny config on background
text with the target documents inserted ``repeats`` times at random positions, with the standard
loss and goldfish at each k, and a control that never saw the targets; audit all on the targets."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np

from goldfish.audit import AuditConfig, run_audit
from goldfish.report import Report, figure_png, pyplot, settings_block
from goldfish.cache import write_text_atomic
from goldfish.experiments.config import DuplicatedConfig
from goldfish.experiments.documents import run_metrics, strong_attacker, strong_attacker_lines, target_documents
from goldfish.experiments.reporting import closing_line, run_names, run_table, utility_table, write_summary
from goldfish.experiments.training import goldfish_config, pretrain
from goldfish.experiments.utility import benchmarks, utility_figures

BASE = None  # the base model the seeds share (experiments.base), or None: trained from scratch
CONFIG = DuplicatedConfig
STANDARD_HEADLINE = (("verbatim", "exact_match_rate"), ("longest run (mean)", "longest_run_mean"),
                     ("verbatim in any sample", "sampled.any_verbatim_rate"))
GOLDFISH_HEADLINE = (*STANDARD_HEADLINE[:2], ("held-out loss change vs standard", "utility.heldout_loss_change"),
                     STANDARD_HEADLINE[2], ("best-of-N longest run (mean)", "sampled.best_longest_run_mean"),
                     ("(1000, 0.5)-discoverable", "extraction_probability.discoverable.1000.0.5"))


def headline(result: dict) -> list[tuple[str, str]]:
    """(label, dotted path) of the figures ``--seeds`` aggregates, for the standard run and every goldfish run of ``result``."""
    return [(f"{run} {label}", f"{run}.{path}") for run in run_names(result) if run != "control"
            for label, path in (STANDARD_HEADLINE if run == "standard" else GOLDFISH_HEADLINE)]


def _mixture(cfg: DuplicatedConfig, targets: Path, with_targets: bool, path: Path) -> Path:
    from goldfish.embedded.corpus import corpus_part

    docs = [{"text": d["text"]} for d in corpus_part("background")[: cfg.background_docs]]
    if with_targets:
        inserted = [json.loads(line) for line in targets.read_text().splitlines()] * cfg.repeats
        rng = random.Random(cfg.seed)
        for doc in inserted:
            docs.insert(rng.randrange(len(docs) + 1), {"text": doc["text"]})
    write_text_atomic(path, "".join(json.dumps(d) + "\n" for d in docs))
    return path


def _pretrain(cfg: DuplicatedConfig, data: Path, strategy: str, k: float, out: Path) -> Path:
    """From scratch on ``data``; rows fit a whole target document (EOS included)."""
    return pretrain(cfg, [str(data)], goldfish_config(cfg, strategy, k), out, cfg.steps, max(cfg.base_seq, cfg.doc_tokens + 1))


def run_name(k: float | None) -> str:
    return "standard" if k is None else f"goldfish k={k:g}"


def run(cfg: DuplicatedConfig) -> dict:
    from goldfish.embedded.tiny import load_embedded_tokenizer

    start = time.time()
    out = Path(cfg.out)
    members, non_members = target_documents(cfg, load_embedded_tokenizer(), out)
    mix = _mixture(cfg, members, True, out / "data" / "mixture.jsonl")
    clean = _mixture(cfg, members, False, out / "data" / "control.jsonl")
    runs = {"control": _pretrain(cfg, clean, "none", 4, out / "models" / "control")}
    runs["standard"] = _pretrain(cfg, mix, "none", 4, out / "models" / "standard")
    for k in cfg.ks:
        runs[run_name(k)] = _pretrain(cfg, mix, "hash", k, out / "models" / f"goldfish-k{k:g}")
    audit = run_audit(AuditConfig(
        models=[str(p) for p in runs.values()], names=list(runs), data=str(members), non_members=str(non_members),
        out=str(out / "audit"), prefix_len=cfg.prefix_len, suffix_len=cfg.suffix_len, batch_size=cfg.audit_batch,
        device=cfg.device, progress=cfg.progress, baseline="standard", samples=cfg.samples, temperature=cfg.temperature,
        top_p=cfg.top_p,
    ))
    result = {"experiment": "duplicated", **run_metrics(audit)}
    for name, figures in utility_figures(audit).items():
        result[name]["utility"] = figures
    result["benchmarks"] = benchmarks(cfg, runs, "standard", out)
    result["per_k"] = [{"k": k, "rouge_l_mean": result[run_name(k)]["rouge_l_mean"],
                        "longest_run_mean": result[run_name(k)]["longest_run_mean"]} for k in cfg.ks]
    result["wall_time_s"] = round(time.time() - start, 1)
    result["settings"] = cfg.to_dict()
    _write_report(result, audit, list(runs), out)
    return result


def _histograms(audit: dict, runs: list[str]) -> bytes:
    plt = pyplot()
    rouge = {n: [r["rouge_l"] for r in audit["rows"] if r["model"] == n and r["member"] and r["rouge_l"] is not None] for n in runs}
    others = [n for n in runs if n != "control"]
    cols = min(3, len(others))
    rows = -(-len(others) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3 * rows), dpi=110, sharey=True, squeeze=False)
    bins = np.linspace(0, 1, 21)
    for ax in axes.flat[len(others):]:
        ax.axis("off")
    for ax, name in zip(axes.flat, others):
        ax.hist(rouge["control"], bins=bins, alpha=0.5, label="control", color="tab:blue")
        ax.hist(rouge[name], bins=bins, alpha=0.6, label=name, color="tab:red" if name == "standard" else "tab:green")
        ax.set_title(f"{name}\nmean {np.mean(rouge[name]):.2f} (control {np.mean(rouge['control']):.2f})", fontsize=9)
        ax.set_xlabel("Rouge-L")
        ax.legend(fontsize=7)
    for row in axes:
        row[0].set_ylabel("documents")
    fig.tight_layout()
    return figure_png(fig)


def _write_report(result: dict, audit: dict, runs: list[str], out: Path) -> None:
    s = result["settings"]
    report = Report("goldfish experiment duplicated (paper Fig. 2)")
    report.paragraph(
        f"Tiny Llama ({s['size']}) trained from scratch for {s['steps']} steps of {s['base_batch']} packed rows on the embedded "
        f"background text ({s['background_docs'] or 'all'} documents), with {s['n_docs']} target documents of {s['doc_tokens']} tokens inserted {s['repeats']} times each "
        f"at random positions; the control saw no targets. Extraction: {s['prefix_len']}-token prefix, {s['suffix_len']}-token "
        f"greedy suffix. Wall time {result['wall_time_s']:.0f} s, seed {s['seed']}."
    )
    report.table(*run_table(result, runs))
    strong_attacker(report, result, runs)
    report.heading("What the models still know")
    report.paragraph("Held-out loss on the non-member documents (bootstrap 95% interval) and its change against standard; "
                     "repeated 4-grams of the generations; accuracy ± stderr on the embedded benchmark tasks (chance 0.25).")
    report.table(*utility_table(result, runs))
    report.heading("Per k")
    report.table(["k", "Rouge-L (mean)", "longest run (mean)"], [[p["k"], p["rouge_l_mean"], p["longest_run_mean"]] for p in result["per_k"]])
    report.image("rouge_l_hist.png", _histograms(audit, runs), "Rouge-L per document, each run against the control")
    settings_block(report, result)
    write_summary(result, out)
    report.write(out)


def lines(result: dict) -> list:
    return [run_table(result, run_names(result)), *strong_attacker_lines(result, run_names(result)),
            utility_table(result, run_names(result)),
            *(f"k={p['k']:g}: Rouge-L {p['rouge_l_mean']:.3f}, longest run {p['longest_run_mean']:.1f} tokens" for p in result["per_k"]),
            closing_line(result)]
