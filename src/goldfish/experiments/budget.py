"""The paper's token-budget comparison (Fig. 5): validation loss against input tokens and against
supervised tokens, standard loss vs goldfish k = 4, both trained from the tiny config on the
embedded background text and evaluated on the held-out validation part."""

from __future__ import annotations

import time
from pathlib import Path

from transformers import TrainerCallback

from goldfish.audit.extraction import mean_supervised_nll
from goldfish.report import Report, loss_curves_png, settings_block
from goldfish.experiments.config import BudgetConfig
from goldfish.experiments.reporting import closing_line, write_summary

CONFIG = BudgetConfig


class ValidationCurve(TrainerCallback):
    """Every ``every`` steps: mean validation loss (all tokens, standard CE) and the tokens seen."""

    def __init__(self, rows: list[dict], every: int, pad_token_id: int, batch_size: int = 16):
        self.rows, self.every, self.pad_token_id, self.batch_size = rows, every, pad_token_id, batch_size
        self.points: list[dict] = []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            self.points.append({"step": state.global_step, "input_tokens": state.num_input_tokens_seen,
                                "supervised_tokens": getattr(state, "supervised_targets_seen", 0),
                                "validation_loss": mean_supervised_nll(model, self.rows, self.pad_token_id, self.batch_size)})


def run(cfg: BudgetConfig) -> dict:
    from goldfish.data import build_examples, pack_examples, read_documents
    from goldfish.embedded.tiny import load_embedded_tokenizer
    from goldfish.experiments.training import goldfish_config, pretrain

    start = time.time()
    out = Path(cfg.out)
    tokenizer = load_embedded_tokenizer()
    val = pack_examples(build_examples(read_documents("embedded:validation"), tokenizer, cfg.base_seq, cfg.k),
                        cfg.base_seq, tokenizer.pad_token_id)
    curves = {}
    for name, strategy in (("standard", "none"), (f"goldfish k={cfg.k:g}", "hash")):
        curve = ValidationCurve(val, cfg.eval_every, tokenizer.pad_token_id)
        pretrain(cfg, ["embedded:background"], goldfish_config(cfg, strategy),
                 out / "models" / ("standard" if strategy == "none" else "goldfish"), cfg.steps, cfg.base_seq, callbacks=[curve])
        curves[name] = curve.points
    result = {"experiment": "budget", "curves": curves,
              "final_validation_loss": {n: c[-1]["validation_loss"] for n, c in curves.items()},
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
                 [[n, c[-1]["validation_loss"], c[-1]["input_tokens"], c[-1]["supervised_tokens"]] for n, c in result["curves"].items()])
    report.image("validation_loss.png", loss_curves_png(result["curves"], "validation_loss"), "Validation loss against input tokens and against supervised tokens")
    settings_block(report, result)
    write_summary(result, out)
    report.write(out)


def lines(result: dict) -> list:
    return [*(f"{name}: final validation loss {loss:.4f}" for name, loss in result["final_validation_loss"].items()),
            closing_line(result)]
