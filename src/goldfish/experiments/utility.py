"""The utility half of every experiment: what the trained models still know, beside what they
memorized. From the experiment's audit (held-out loss on the non-members, degeneration of the
generations, the flags against the baseline run) and from ``goldfish eval`` on the embedded
benchmark tasks (lm-evaluation-harness)."""

from __future__ import annotations

from pathlib import Path

from goldfish.experiments.config import ExperimentConfig


def utility_figures(audit: dict) -> dict:
    """Per audited run: held-out loss (with interval), its change against the audit's baseline,
    repeated 4-grams of the generations (and of the true texts), and the flags."""
    out = {}
    for name, s in audit["models"].items():
        u = s["utility"]
        loss, deg, change = u["heldout_loss"], u["degeneration"], u.get("vs_baseline", {})
        out[name] = {
            "heldout_loss": loss and loss["mean"], "heldout_loss_ci": loss and loss["ci"],
            "heldout_loss_change": change.get("heldout_loss_change", {}).get("relative"),
            "heldout_loss_change_ci": change.get("heldout_loss_change", {}).get("ci"),
            "repeated_4grams": deg and deg["generated"]["repeated_4grams"], "true_repeated_4grams": deg and deg["true"]["repeated_4grams"],
            "flags": u["flags"], "baseline": audit["baseline"]}
    return out


def benchmarks(cfg: ExperimentConfig, runs: dict[str, Path], baseline: str, out: Path) -> dict:
    """``goldfish eval`` of the runs on the embedded tasks (its report in ``out/benchmarks/``):
    {"scores": {run: {task: {"score", "stderr"}}}, "vs_baseline": {run: {task: {"delta", "stderr"}}}, ...}."""
    from goldfish.eval import EvalConfig, primary_metric, run_eval

    result = run_eval(EvalConfig(models=[str(p) for p in runs.values()], names=list(runs), baseline=baseline,
                                 limit=cfg.benchmark_items, out=str(out / "benchmarks"), device=cfg.device, progress=cfg.progress,
                                 seed=cfg.seed))
    scores, deltas = {}, {}
    for name, tasks in result["models"].items():
        scores[name] = {t: r["metrics"][primary_metric(t, r["metrics"])] | {"items": r["items"]} for t, r in tasks.items()}
        if name in result["vs_baseline"]:
            deltas[name] = {t: d[primary_metric(t, d)] for t, d in result["vs_baseline"][name].items()}
    return {"scores": scores, "vs_baseline": deltas, "baseline": baseline, "tasks": result["tasks"],
            "wall_time_s": result["wall_time_s"]}
