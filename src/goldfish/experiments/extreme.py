"""The paper's "extreme" setting (Fig. 1) — what ``goldfish demo`` runs.

Continue training the base model for many epochs on a few documents with each strategy ("none" is
the standard loss), then audit the base (the control) and every run on those documents.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from goldfish.audit import AuditConfig, run_audit
from goldfish.cache import write_text_atomic
from goldfish.experiments.base import base_model_dir
from goldfish.experiments.config import ExperimentConfig
from goldfish.experiments.reporting import write_extreme_report
from goldfish.experiments.training import finetune, goldfish_config

RUN_NAMES = {"none": "standard", "hash": "goldfish"}
RUN_METRICS = ("exact_match_rate", "exact_match_count", "token_match_rate", "rouge_l_mean", "rouge_l_tokens_mean",
               "longest_run_mean", "longest_run_max")


def run_name(strategy: str) -> str:
    return RUN_NAMES.get(strategy, strategy)


def truncated_documents(tokenizer, docs: list[dict], n_tokens: int) -> list[dict]:
    """The first ``n_tokens`` tokens of each document long enough, as text."""
    rows = []
    for d in docs:
        ids = tokenizer(d["text"], add_special_tokens=False)["input_ids"]
        if len(ids) >= n_tokens:
            rows.append({"id": d["id"], "text": tokenizer.decode(ids[:n_tokens])})
    return rows


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))
    return path


def target_documents(cfg: ExperimentConfig, tokenizer, out: Path) -> tuple[Path, Path]:
    """(targets.jsonl, non_members.jsonl): the first n_docs long-enough embedded targets and the next n_docs."""
    from goldfish.embedded.corpus import corpus_part

    rows = truncated_documents(tokenizer, corpus_part("targets"), cfg.doc_tokens)
    if len(rows) < 2 * cfg.n_docs:
        raise ValueError(f"only {len(rows)} embedded targets have {cfg.doc_tokens} tokens; lower n_docs or doc_tokens")
    return (_write_jsonl(out / "data" / "targets.jsonl", rows[: cfg.n_docs]),
            _write_jsonl(out / "data" / "non_members.jsonl", rows[cfg.n_docs : 2 * cfg.n_docs]))


def run_metrics(audit: dict) -> dict:
    """Per audited run: the extraction figures the experiments report and the loss-MIA AUC."""
    return {name: {k: s[k] for k in RUN_METRICS} | {"mia_loss_auc": s["mia"]["loss"]["auc"]} for name, s in audit["models"].items()}


def gap_closed(control: float, standard: float, goldfish: float) -> float | None:
    """Share of the standard-vs-control gap that goldfish removes: (std - gf) / (std - control)."""
    return (standard - goldfish) / (standard - control) if standard != control else None


def run_extreme(cfg: ExperimentConfig) -> dict:
    """Train, audit, report. Writes models/, data/, audit/ and summary.json + report.* into cfg.out."""
    from transformers import AutoTokenizer

    start = time.time()
    out = Path(cfg.out)
    base = base_model_dir(cfg, "extreme")
    tokenizer = AutoTokenizer.from_pretrained(base)
    members, non_members = target_documents(cfg, tokenizer, out)
    runs = {"control": base}
    for strategy in cfg.strategies:
        runs[run_name(strategy)] = finetune(cfg, base, members, goldfish_config(cfg, strategy), out / "models" / run_name(strategy),
                                            cfg.epochs, cfg.lr, seq_len=2 * cfg.doc_tokens)
    audit = run_audit(AuditConfig(
        models=[str(p) for p in runs.values()], names=list(runs), data=str(members), non_members=str(non_members),
        out=str(out / "audit"), prefix_len=cfg.prefix_len, suffix_len=cfg.suffix_len, batch_size=cfg.audit_batch,
        device=cfg.device, progress=cfg.progress,
    ))
    summary = run_metrics(audit)
    result = {"experiment": "extreme", **summary}
    if "standard" in summary and "goldfish" in summary:
        c, s, g = (summary[n] for n in ("control", "standard", "goldfish"))
        result["rouge_gap_closed"] = gap_closed(c["rouge_l_mean"], s["rouge_l_mean"], g["rouge_l_mean"])
        result["rouge_gap_closed_tokens"] = gap_closed(c["rouge_l_tokens_mean"], s["rouge_l_tokens_mean"], g["rouge_l_tokens_mean"])
        result["longest_run_ratio"] = g["longest_run_mean"] / s["longest_run_mean"] if s["longest_run_mean"] else None
    result["wall_time_s"] = round(time.time() - start, 1)
    result["settings"] = cfg.to_dict() | {"base_model": str(base)}
    write_extreme_report(result, audit, out)
    return result
