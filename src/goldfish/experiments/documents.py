"""What the document recipes (extreme, duplicated) share: the embedded documents to (not) memorize,
as JSON lines, and the figures they report from an audit."""

from __future__ import annotations

import json
from pathlib import Path

from goldfish.cache import write_text_atomic
from goldfish.experiments.config import DocumentsConfig

RUN_METRICS = ("documents", "exact_match_rate", "exact_match_count", "token_match_rate", "rouge_l_mean", "rouge_l_tokens_mean",
               "longest_run_mean", "longest_run_max")


def truncated_documents(tokenizer, docs: list[dict], n_tokens: int) -> list[dict]:
    """The first ``n_tokens`` tokens of each document long enough, as text."""
    rows = []
    for d in docs:
        ids = tokenizer(d["text"], add_special_tokens=False)["input_ids"]
        if len(ids) >= n_tokens:
            rows.append({"id": d["id"], "text": tokenizer.decode(ids[:n_tokens])})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))
    return path


def target_documents(cfg: DocumentsConfig, tokenizer, out: Path) -> tuple[Path, Path]:
    """(targets.jsonl, non_members.jsonl): the first n_docs long-enough embedded targets and the next n_docs."""
    from goldfish.embedded.corpus import corpus_part

    rows = truncated_documents(tokenizer, corpus_part("targets"), cfg.doc_tokens)
    if len(rows) < 2 * cfg.n_docs:
        raise ValueError(f"only {len(rows)} embedded targets have {cfg.doc_tokens} tokens; lower n_docs or doc_tokens")
    return (write_jsonl(out / "data" / "targets.jsonl", rows[: cfg.n_docs]),
            write_jsonl(out / "data" / "non_members.jsonl", rows[cfg.n_docs : 2 * cfg.n_docs]))


def run_metrics(audit: dict) -> dict:
    """Per audited run: the extraction figures the experiments report (greedy; sampled and the exact
    extraction probability where the audit measured them, as its summary has them) and the loss-MIA AUC."""
    return {name: {k: s[k] for k in RUN_METRICS} | {k: s[k] for k in ("sampled", "extraction_probability") if k in s}
            | {"mia_loss_auc": s["mia"]["loss"]["auc"]} for name, s in audit["models"].items()}


def strong_attacker(report, result: dict, runs: list[str]) -> None:
    """The report section of the sampled attacker and the exact extraction probability, beside greedy
    (``goldfish.audit.report``'s tables), when the audit measured them."""
    from goldfish.audit.report import extraction_probability_rows, rule_text, sampled_rows

    models, s = {n: result[n] for n in runs}, result["settings"]
    if not any("sampled" in m or "extraction_probability" in m for m in models.values()):
        return
    report.heading("Greedy against the strong attacker")
    report.paragraph((f"Each prefix also sampled {s['samples']} times at {rule_text(s)} (goldfish audit --samples), and "
                      if s["samples"] else f"Greedy only (--samples 0); at {rule_text(s)}, ")
                     + "p_exact: the probability that one sample reproduces the true suffix exactly, "
                     "computed from the model's own probabilities; a document is (n, p)-discoverable when one of n samples "
                     "reproduces it with probability at least p.")
    if any("sampled" in m for m in models.values()):
        report.table(*sampled_rows(models))
    if any("extraction_probability" in m for m in models.values()):
        report.table(*extraction_probability_rows(models))


def strong_attacker_lines(result: dict, runs: list[str]) -> list:
    """``strong_attacker``'s tables, for the terminal."""
    from goldfish.audit.report import extraction_probability_rows, sampled_rows

    models = {n: result[n] for n in runs}
    return ([sampled_rows(models)] if any("sampled" in m for m in models.values()) else []) + (
        [extraction_probability_rows(models)] if any("extraction_probability" in m for m in models.values()) else [])


def gap_closed(control: float, standard: float, goldfish: float) -> float | None:
    """Share of the standard-vs-control gap that goldfish removes: (std - gf) / (std - control)."""
    return (standard - goldfish) / (standard - control) if standard != control else None
