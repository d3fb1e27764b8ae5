"""``goldfish eval``: downstream benchmarks on lm-evaluation-harness, the half of the paper's claim
that the model still learned (Fig. 3: benchmark scores unchanged).

Each model (a local HF folder or PEFT adapter, as in the audit) is scored by lm-eval's own tasks,
offline: a task whose data is not local fails with an error naming what is missing. By default the
embedded tasks (``goldfish.embedded.tasks``: built from held-out embedded text, nothing to download)
run; ``--tasks`` takes any lm-eval task names, and ``--include-path`` folders of local YAML tasks.
The result holds every metric with its stderr per task and model, and the difference to the
baseline model (``--baseline NAME``; default the first) with the stderr of that difference,
sqrt(se_a^2 + se_b^2): the scores are treated as independent, and since both models answer the same
items (positively correlated outcomes) the true stderr of the difference is smaller, so this one is
conservative. ``summary.json`` and a report go to ``--out``.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from goldfish.cache import atomic_dir, check_out_folder
from goldfish.embedded.tasks import METRIC, TASKS
from goldfish.models import ModelsArguments, resolve_models

STDERR = "_stderr"
EVAL_FILES = ("summary.json", "report.md", "report.html")  # what --out holds after a run


@dataclass
class EvalConfig(ModelsArguments):
    """Settings of ``goldfish eval`` (the CLI flags have the same names): the models' group and the benchmarks'."""

    tasks: list[str] = field(default_factory=lambda: list(TASKS), metadata={
        "repeatable": True, "help": "lm-eval task names (None given: the embedded tasks, built from held-out embedded text)"})
    include_path: list[str] = field(default_factory=list, metadata={
        "repeatable": True, "help": "folders of local lm-eval YAML tasks (added to lm-eval's own)"})
    out: str | None = field(default=None, metadata={"help": "report folder"})
    limit: int | None = field(default=None, metadata={"help": "score only the first N items of each task"})
    num_fewshot: int | None = field(default=None, metadata={"help": "few-shot examples per item (None: the task's own)"})
    batch_size: int = field(default=32, metadata={"help": "requests a batch"})
    seed: int = field(default=0, metadata={"help": "seed of lm-eval's sampling (few-shot examples)"})
    progress: bool = field(default=True, metadata={"help": "progress bars"})


def require_lm_eval() -> None:
    """Raise ValueError with the install line unless lm-evaluation-harness is importable."""
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise ValueError("goldfish eval runs lm-evaluation-harness: pip install 'goldfish[eval]' (or pip install lm-eval)") from None


def _task_manager(cfg: EvalConfig):
    """lm-eval's TaskManager over the local task folders (the embedded tasks' and ``--include-path``),
    and over lm-eval's own tasks only when a task is not among them (indexing those reads ~14k YAML files)."""
    from lm_eval.tasks import TaskManager

    from goldfish.embedded.tasks import embedded_tasks_dir

    for p in cfg.include_path:
        if not Path(p).is_dir():
            raise ValueError(f"--include-path {p}: no such folder of lm-eval YAML tasks")
    paths = [str(p) for p in cfg.include_path] + ([str(embedded_tasks_dir())] if set(cfg.tasks) & set(TASKS) else [])
    manager = TaskManager(include_path=paths or None, include_defaults=False) if paths else None
    if manager is None or not set(cfg.tasks) <= set(manager.all_tasks):
        manager = TaskManager(include_path=paths or None)
    unknown = [t for t in cfg.tasks if t not in manager.all_tasks]
    if unknown:
        import difflib

        hints = {t: difflib.get_close_matches(t, manager.all_tasks, n=3) for t in unknown}
        raise ValueError("unknown lm-eval task(s): " + "; ".join(
            f"{t}" + (f" (did you mean {', '.join(h)}?)" if h else "") for t, h in hints.items())
                         + "; give lm-eval task names, or a folder of YAML tasks with --include-path")
    return manager


def _scores(results: dict) -> dict:
    """lm-eval's per-task results -> {task: {metric: {"score", "stderr"}, "items": n}} (filters named once)."""
    out = {}
    for task, r in results["results"].items():
        metrics = {}
        for key, value in r.items():
            name, _, filt = key.partition(",")
            if not filt or name.endswith(STDERR) or not isinstance(value, (int, float)):
                continue
            label = name if filt == "none" else f"{name} ({filt})"
            stderr = r.get(f"{name}{STDERR},{filt}")
            metrics[label] = {"score": float(value),
                              "stderr": float(stderr) if isinstance(stderr, (int, float)) and math.isfinite(stderr) else None}
        out[task] = {"metrics": metrics, "items": results.get("n-samples", {}).get(task, {}).get("effective")}
    return out


def evaluate_model(model, tokenizer, cfg: EvalConfig, manager) -> dict:
    """lm-eval's scores of one loaded model on ``cfg.tasks`` ({task: {"metrics", "items"}})."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=cfg.batch_size, device=str(next(model.parameters()).device))
    try:
        results = lm_eval.simple_evaluate(model=lm, tasks=list(cfg.tasks), task_manager=manager, limit=cfg.limit,
                                          num_fewshot=cfg.num_fewshot, log_samples=False, random_seed=cfg.seed,
                                          numpy_random_seed=cfg.seed, torch_random_seed=cfg.seed,
                                          fewshot_random_seed=cfg.seed, verbosity="ERROR")
    except ConnectionError as e:  # datasets, offline: "Couldn't reach 'org/name' on the Hub (OfflineModeIsEnabled)"
        raise ValueError(f"a task's data is not on this machine and goldfish eval runs offline ({e}); download the "
                         "dataset into the Hugging Face cache first, or give a local YAML task with --include-path") from None
    return _scores(results)


def compare(scores: dict, baseline: str) -> dict:
    """{model: {task: {metric: {"delta", "stderr"}}}}: each model's score minus the baseline's."""
    base = scores[baseline]
    out = {}
    for name, tasks in scores.items():
        if name == baseline:
            continue
        out[name] = {}
        for task, r in tasks.items():
            out[name][task] = {}
            for metric, m in r["metrics"].items():
                b = base[task]["metrics"][metric]
                se = math.sqrt(m["stderr"] ** 2 + b["stderr"] ** 2) if m["stderr"] is not None and b["stderr"] is not None else None
                out[name][task][metric] = {"delta": m["score"] - b["score"], "stderr": se}
    return out


def primary_metric(task: str, metrics: dict) -> str:
    """The metric a task is read by: the embedded tasks' own (``METRIC``), else the task's first."""
    return METRIC.get(task) if METRIC.get(task) in metrics else next(iter(metrics))


@contextlib.contextmanager
def _offline(progress: bool):
    """Within: the Hub is off for ``datasets`` and ``huggingface_hub`` (both read their switch at import
    time, so the module constants are set, then restored), lm-eval logs errors only and does not ask
    git for the working folder's commit (outside a repository git prints "fatal: not a git
    repository"; the report records the package versions instead), and without ``progress`` tqdm
    bars are off."""
    import logging

    import datasets.config
    import huggingface_hub.constants
    from datasets.utils.tqdm import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    logging.getLogger("lm_eval").setLevel(logging.ERROR)  # its notes on being given a loaded model

    saved = (datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE, os.environ.get("TQDM_DISABLE"),
             are_progress_bars_disabled())
    datasets.config.HF_HUB_OFFLINE = huggingface_hub.constants.HF_HUB_OFFLINE = True
    if not progress:
        os.environ["TQDM_DISABLE"] = "1"  # lm-eval's bars (tqdm reads it when a bar is made)
        disable_progress_bars()  # and those of datasets
    from unittest import mock

    import lm_eval.evaluator

    try:
        with mock.patch.object(lm_eval.evaluator, "get_git_commit_hash", return_value=None):
            yield
    finally:
        datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE = saved[:2]
        if saved[2] is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = saved[2]
        if not saved[3]:
            enable_progress_bars()


def run_eval(cfg: EvalConfig) -> dict:
    """Score every model; write ``summary.json`` and the report to ``cfg.out`` if given.

    Returns {"models": {name: {task: {"metrics": {metric: {"score", "stderr"}}, "items"}}},
    "baseline": name, "vs_baseline": compare(...), "tasks", "settings", "wall_time_s"}.
    """
    from goldfish.models import load_model

    require_lm_eval()
    models, baseline = resolve_models(cfg)
    if cfg.out:
        check_out_folder(cfg.out, EVAL_FILES, "goldfish eval")  # before the evaluation, not after it
    start = time.time()
    scores = {}
    with _offline(cfg.progress):
        manager = _task_manager(cfg)
        for name, path in models.items():
            model, tokenizer = load_model(path, cfg.device, cfg.dtype, cfg.trust_remote_code)
            scores[name] = evaluate_model(model, tokenizer, cfg, manager)
            del model
    result = {"models": scores, "baseline": baseline, "vs_baseline": compare(scores, baseline), "tasks": list(cfg.tasks),
              "settings": {k: v for k, v in asdict(cfg).items() if k != "progress"}, "wall_time_s": round(time.time() - start, 2)}
    if cfg.out:
        write_eval_report(result, cfg.out)
    return result


def score_rows(result: dict) -> tuple[list[str], list[list]]:
    """The report's table: one row per model, task and metric: score ± stderr, and the difference to
    the baseline. Metrics of a task with the same score and stderr for every model (``acc`` and
    ``acc_norm`` of tasks whose choices are one token long) share one row, named "acc = acc_norm"."""
    rows = []
    for name, tasks in result["models"].items():
        for task, r in tasks.items():
            for metrics in _same_metrics(result, task):
                m = r["metrics"][metrics[0]]
                d = result["vs_baseline"].get(name, {}).get(task, {}).get(metrics[0])
                rows.append([name, task, " = ".join(metrics), r["items"], _pm(m["score"], m["stderr"]),
                             "baseline" if d is None else _pm(d["delta"], d["stderr"], signed=True)])
    return ["model", "task", "metric", "items", "score ± stderr", f"Δ vs {result['baseline']} ± stderr"], rows


def _same_metrics(result: dict, task: str) -> list[list[str]]:
    """The task's metrics in groups whose score and stderr agree for every model, in their order."""
    groups: dict[tuple, list[str]] = {}
    first = next(iter(result["models"].values()))[task]["metrics"]
    for metric in first:
        key = tuple((t[task]["metrics"][metric]["score"], t[task]["metrics"][metric]["stderr"]) for t in result["models"].values())
        groups.setdefault(key, []).append(metric)
    return list(groups.values())


def verdict_line(result: dict) -> str:
    """Which models score below the baseline by more than two standard errors of the difference, on
    each task's primary metric (``primary_metric``); or that none does."""
    below = [f"{name} on {task} ({_pm(d['delta'], d['stderr'], signed=True)})"
             for name, tasks in result["vs_baseline"].items() for task, metrics in tasks.items()
             if (d := metrics[primary_metric(task, metrics)])["stderr"] is not None and d["delta"] < -2 * d["stderr"]]
    if below:
        return f"below {result['baseline']} by more than 2 standard errors: {'; '.join(below)}"
    return f"no model below {result['baseline']} by more than 2 standard errors on any task"


def _pm(value: float, stderr: float | None, signed: bool = False) -> str:
    text = f"{value:+.3f}" if signed else f"{value:.3f}"
    return text if stderr is None else f"{text} ± {stderr:.3f}"


def write_eval_report(result: dict, out: str | Path) -> None:
    """EVAL_FILES (``summary.json``, ``report.md``, ``report.html``) as one set: written into a temp folder
    that replaces ``out`` in one rename, so a reader never sees the files of two runs together."""
    import json

    from goldfish.report import Report, settings_block, versions

    out = Path(out)
    report = Report("Benchmarks (lm-evaluation-harness)")
    report.paragraph(f"{len(result['models'])} model(s) on {', '.join(result['tasks'])}; scores with their standard errors "
                     f"(lm-eval's), and each model's difference to {result['baseline']} with the standard error of the "
                     f"difference. Wall time {result['wall_time_s']:.1f} s.")
    report.table(*score_rows(result))
    report.paragraph(f"Verdict: {verdict_line(result)}.")
    settings_block(report, result)
    with atomic_dir(out.absolute()) as tmp:
        (tmp / "summary.json").write_text(json.dumps(result | {"versions": versions()}, indent=2) + "\n", encoding="utf-8")
        report.write(tmp)
