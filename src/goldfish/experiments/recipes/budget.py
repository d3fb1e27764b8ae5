"""The paper's token-budget comparison (Fig. 5): validation loss against input tokens and against
supervised tokens, standard loss vs goldfish k = 4, both trained from the tiny config on the
embedded background text and evaluated on the held-out validation part."""

from __future__ import annotations

import json
import time
from pathlib import Path

from goldfish.report import Report, loss_curves_png, settings_block
from goldfish.experiments.config import BudgetConfig
from goldfish.experiments.reporting import closing_line, write_summary

BASE = None  # the base model the seeds share (experiments.base), or None: trained from scratch
CONFIG = BudgetConfig


def headline(result: dict) -> list[tuple[str, str]]:
    """(label, dotted path) of the figures ``--seeds`` aggregates: each trained run's final validation loss."""
    return [(f"{name} final validation loss", f"final_validation_loss.{name}") for name in result["final_validation_loss"]]


def run(cfg: BudgetConfig) -> dict:
    from goldfish.experiments.training import goldfish_config, pretrain

    start = time.time()
    out = Path(cfg.out)
    curves = {}
    for name, strategy in (("standard", "none"), (f"goldfish k={cfg.k:g}", "hash")):
        model = pretrain(cfg, ["embedded:background"], goldfish_config(cfg, strategy),
                         out / "models" / ("standard" if strategy == "none" else "goldfish"), cfg.steps, cfg.base_seq,
                         eval_data=["embedded:validation"], eval_steps=cfg.eval_every)
        curves[name] = json.loads((model / "goldfish.json").read_text())["eval"]
    result = {"experiment": "budget", "curves": curves,
              "final_validation_loss": {n: c[-1]["eval_loss"] for n, c in curves.items()},
              "wall_time_s": round(time.time() - start, 1), "settings": cfg.to_dict()}
    _write_report(result, out)
    return result


def _write_report(result: dict, out: Path) -> None:
    s = result["settings"]
    report = Report("goldfish experiment budget (paper Fig. 5)")
    report.paragraph(
        f"Tiny Llama ({s['size']}) trained from scratch for {s['steps']} steps of {s['base_batch']} x {s['base_seq']} packed "
        f"tokens of the embedded background text; validation loss (all tokens, standard cross-entropy) on the held-out "
        f"validation part every {s['eval_every']} steps. Goldfish sees the same input tokens but learns from ~{100 - 100 / s['k']:.0f}% "
        f"of them, so it should trail the standard loss per input token and match it per supervised token. "
        f"Wall time {result['wall_time_s']:.0f} s, seed {s['seed']}."
    )
    report.table(["run", "final validation loss", "input tokens", "supervised tokens"],
                 [[n, c[-1]["eval_loss"], c[-1]["input_tokens"], c[-1]["supervised_tokens"]] for n, c in result["curves"].items()])
    report.image("validation_loss.png", loss_curves_png(result["curves"]), "Validation loss against input tokens and against supervised tokens")
    settings_block(report, result)
    write_summary(result, out)
    report.write(out)


def lines(result: dict) -> list:
    return [*(f"{name}: final validation loss {loss:.4f}" for name, loss in result["final_validation_loss"].items()),
            closing_line(result)]
