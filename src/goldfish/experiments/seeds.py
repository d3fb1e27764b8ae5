"""``--seeds N``: a recipe run N times, seeds ``seed`` .. ``seed + N - 1`` (each in ``OUT/seed-S``), and
its figures aggregated: every number the N results share (at the same place in them) as its mean,
min and max. The base model of a fine-tuning recipe is built once, with the first seed, and shared:
the seeds vary the data, its order, the sampling of the evaluation prompts and the goldfish hash, and
the initialisation where a recipe trains from scratch."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from goldfish.experiments import Recipe
from goldfish.experiments.reporting import write_summary
from goldfish.report import Report, settings_block


def _leaves(value, path=()):
    """(path, number) of every int/float leaf of nested dicts (bools and lists left out)."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _leaves(inner, (*path, str(key)))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path, float(value)


def aggregate(results: list[dict]) -> dict:
    """{dotted path: {"mean", "min", "max", "values"}} over the numbers every result has."""
    found = [dict(_leaves(r)) for r in results]
    shared = [p for p in found[0] if all(p in f for f in found[1:])]
    out = {}
    for path in shared:
        values = [f[path] for f in found]
        out[".".join(path)] = {"mean": float(np.mean(values)), "min": min(values), "max": max(values), "values": values}
    return out


def run_seeds(recipe: Recipe, cfg) -> dict:
    """Run ``recipe`` for ``cfg.seeds`` seeds (on the shared base ``recipe.BASE``, if any) and write the aggregate
    summary and report into ``cfg.out``; returns {"seeds", "runs": {seed: result}, "aggregate", "settings", "wall_time_s"}."""
    start = time.time()
    out = Path(cfg.out)
    if recipe.BASE is not None and cfg.model is None:
        from goldfish.experiments.base import base_model_dir

        cfg = dataclasses.replace(cfg, model=str(base_model_dir(cfg, recipe.BASE)))
    seeds = [cfg.seed + i for i in range(cfg.seeds)]
    runs = {s: recipe.run(dataclasses.replace(cfg, seed=s, seeds=1, out=str(out / f"seed-{s}"))) for s in seeds}
    result = {"seeds": seeds, "runs": runs, "aggregate": aggregate(list(runs.values())), "settings": cfg.to_dict(),
              "wall_time_s": round(time.time() - start, 1)}
    _write_report(result, recipe, out)
    return result


def headline_rows(result: dict, recipe: Recipe) -> tuple[list[str], list[list]]:
    """The recipe's headline figures over the seeds (``recipe.headline`` of the first seed's result: the
    runs trained are those of every seed): mean [min, max] and each seed's value."""
    rows = []
    for label, path in recipe.headline(next(iter(result["runs"].values()))):
        a = result["aggregate"].get(path)
        if a is not None:
            rows.append([label, f"{a['mean']:.3f} [{a['min']:.3f}, {a['max']:.3f}]", *(f"{v:.3f}" for v in a["values"])])
    return ["figure", "mean [min, max]", *(f"seed {s}" for s in result["seeds"])], rows


def _write_report(result: dict, recipe: Recipe, out: Path) -> None:
    report = Report(f"goldfish experiment over {len(result['seeds'])} seeds")
    report.paragraph(f"Seeds {', '.join(map(str, result['seeds']))}; each run's own report is in seed-S/. Every figure the runs "
                     f"share is in summary.json (aggregate: mean, min, max, per-seed values). Wall time {result['wall_time_s']:.0f} s.")
    report.table(*headline_rows(result, recipe))
    settings_block(report, result)
    write_summary(result, out)
    report.write(out)
