"""``goldfish experiment sweep``: ``goldfish sweep`` on the demo's extreme setting — the demo's base,
documents and fine-tuning (``experiments.recipes.extreme``), one model per k and the standard loss, audited
with the demo's sampled attacker; the frontier and the recommended k land in ``OUT/sweep/``."""

from __future__ import annotations

import time
from pathlib import Path

from goldfish.experiments.base import base_model_dir
from goldfish.experiments.config import SweepConfig
from goldfish.experiments.documents import target_documents
from goldfish.experiments.reporting import closing_line, write_summary
from goldfish.experiments.training import finetune_settings, goldfish_config, train_settings

CONFIG = SweepConfig
BASE = "extreme"  # the base model the seeds share (experiments.base): the demo's
FRONTIER_HEADLINE = (("verbatim in any sample", "any_verbatim_count"), ("best-of-N longest run (mean)", "best_longest_run_mean"),
                     ("held-out loss change", "heldout_loss_change"))


def headline(result: dict) -> list[tuple[str, str]]:
    """(label, dotted path) of the figures ``--seeds`` aggregates: the recommended k, and the frontier
    figures of every goldfish point of ``result`` (the k the run swept)."""
    return [("recommended k", "recommended_k")] + [
        (f"{p['name']} {label}", f"frontier.{p['name']}.{key}") for p in result["sweep"]["points"] if p["k"] is not None
        for label, key in FRONTIER_HEADLINE]


def run(cfg: SweepConfig) -> dict:
    """The sweep into ``OUT/sweep``, then this recipe's summary.json and report in ``OUT``."""
    from transformers import AutoTokenizer

    from goldfish.models import from_pretrained
    from goldfish.report import Report, settings_block
    from goldfish.sweep import SweepArguments, add_frontier, run_sweep
    from goldfish.train_config import TrainConfig

    start = time.time()
    out = Path(cfg.out)
    base = base_model_dir(cfg, "extreme")
    members, non_members = target_documents(cfg, from_pretrained(AutoTokenizer, base), out)
    train = TrainConfig.from_dict(train_settings(cfg, goldfish_config(cfg, "hash"), out / "sweep", finetune_settings(
        base, members, cfg.epochs, cfg.lr, cfg.batch_size, seq_len=2 * cfg.doc_tokens)))
    sweep = run_sweep(train, SweepArguments(
        ks=list(cfg.ks), non_members=str(non_members), target=cfg.target, samples=cfg.samples, temperature=cfg.temperature,
        top_p=cfg.top_p, prefix_len=cfg.prefix_len, suffix_len=cfg.suffix_len, audit_batch=cfg.audit_batch, device=cfg.device))
    result = {"experiment": "sweep", "recommended_k": sweep["recommended_k"], "target": sweep["target"],
              "frontier": {p["name"]: p["measures"] | {"heldout_loss_change_ci": p["heldout_loss_change_ci"], "flags": p["flags"],
                                                       "meets_target": p["meets_target"]} for p in sweep["points"]},
              "sweep": sweep, "wall_time_s": round(time.time() - start, 1), "settings": cfg.to_dict() | {"base_model": str(base)}}
    report = Report("goldfish experiment sweep: the k frontier on the demo's extreme setting")
    report.paragraph(f"The demo's base trained {cfg.epochs:g} more epochs on {cfg.n_docs} documents of {cfg.doc_tokens} tokens "
                     f"with the standard loss and with goldfish at each k; each model continues each document's "
                     f"{cfg.prefix_len}-token prefix for {cfg.suffix_len} tokens. Seed {cfg.seed}; the sweep's own folder is sweep/.")
    add_frontier(report, sweep)
    settings_block(report, result)
    write_summary(result, out)
    report.write(out)
    return result


def lines(result: dict) -> list:
    from goldfish.sweep import frontier_rows, recommendation_lines

    return [frontier_rows(result["sweep"]), *recommendation_lines(result["sweep"]), closing_line(result)]
