"""``goldfish sweep``: which k? One model per k (and per protection choice) trained on the same data
with the same ``goldfish train`` settings, audited together (``goldfish audit``: greedy, sampled and
exact-probability extraction on the training documents, held-out loss and degeneration against the
standard loss), and the frontier between them: memorization against held-out loss change.

The points, each a ``goldfish train`` run into ``OUT/models/NAME``:
    standard            --strategy none, no protection: the reference every held-out loss change is against
    standard+protect    --strategy none --protect SPEC (secrets only), when --protect is given
    k=K                 the goldfish mask (--strategy, hash by default) at each --ks value
    k=K+protect         the same with --protect SPEC, when --protect is given
    k=K[+protect]+align the same with --near-duplicates align (goldfish-align-v1), with --with-align

``OUT`` then holds ``models/``, ``audit/`` (the audit's own report), ``summary.json``, ``report.md``,
``report.html`` and ``frontier.png``. The folder is new, empty or a previous sweep's, and is
replaced whole at the end (``goldfish.cache.atomic_dir``): a failed or killed sweep leaves it as it
was. Data preparation goes through the prepared-data cache, so each distinct mask (and the
held-out data) is tokenized once, and a second sweep on the same data reuses it all.

The recommended k (``summary.json``'s ``recommended_k``) is the largest k of the plain goldfish
points whose memorization meets the target (``goldfish.frontier``) and which the audit's utility
check does not flag; ``recommended`` names it for every family of points.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from goldfish.arguments import ArgumentParser, field_like
from goldfish.audit import AuditConfig
from goldfish.eval import EvalConfig
from goldfish.frontier import check, default_target, frontier_png, heldout_change, measures, parse_target, recommend
from goldfish.train_config import ALIASES, GROUPS, REMOVED, SWITCHES, TrainConfig

logger = logging.getLogger("goldfish")
SWEEP_FILES = ("models", "audit", "benchmarks", "summary.json", "report.md", "report.html", "frontier.png")
REFERENCE = "standard"


@dataclass
class SweepArguments:
    """What ``goldfish sweep`` adds to the ``goldfish train`` flags: the ks, the variants, the target and
    the audit's settings (the audit's own flags and defaults, but ``--samples``)."""

    _argument_group_name = "sweep"
    ks: list[float] = field(default_factory=lambda: [2, 3, 4, 8, 16, 32], metadata={
        "help": "the goldfish k of each point (each >= 2); --strategy none is always trained too, as the reference"})
    non_members: str | None = field_like(AuditConfig, "non_members", help=(
        "held-out documents or chats the models never saw (required): the held-out loss of every point, and membership "
        "inference"))
    audit_data: str | None = field(default=None, metadata={
        "help": "the documents or chats to audit for memorization (None: the one --data source)"})
    target: str | None = field(default=None, metadata={
        "help": "what memorization the recommended k must stay under: clauses MEASURE OP NUMBER joined by 'and' or "
                "commas, e.g. 'longest_run_mean<=13' or 'p_exact_discoverable@1000<=0' (None: no document verbatim in any "
                "sample and the best-of-N longest run, mean, <= --h; without --samples, the greedy ones)"})
    with_align: bool = field(default=False, metadata={
        "help": "also train each k with --near-duplicates align (goldfish-align-v1; with --protect too when given)"})
    # the audit's default is greedy only; the frontier is about the strongest attacker we can compute
    samples: int = field(default=16, metadata={"help": "sampled continuations per prompt besides greedy (goldfish audit "
                                                         "--samples; 0: greedy only)"})
    temperature: float = field_like(AuditConfig, "temperature")
    top_k: int | None = field_like(AuditConfig, "top_k")
    top_p: float = field_like(AuditConfig, "top_p")
    sample_seed: int = field_like(AuditConfig, "sample_seed")
    extraction_probability: bool = field_like(AuditConfig, "extraction_probability")
    suffix_len: int = field_like(AuditConfig, "suffix_len")
    prefix_len: int | None = field_like(AuditConfig, "prefix_len")
    audit_batch: int = field_like(AuditConfig, "batch_size", help="sequences a batch of the audit (goldfish audit --batch-size)")
    max_documents: int | None = field_like(AuditConfig, "max_documents")
    secrets: list[str] = field_like(AuditConfig, "secrets")
    device: str | None = field_like(AuditConfig, "device", help="the audit's device: cpu, cuda, cuda:1 ... (None: cuda if available)")
    benchmarks: bool = field(default=False, metadata={
        "help": "also score every point on downstream tasks with goldfish eval (lm-evaluation-harness, offline; report in "
                "OUT/benchmarks)"})
    benchmark_tasks: list[str] = field_like(EvalConfig, "tasks", help="with --benchmarks: lm-eval task names (goldfish eval "
                                                                      "--tasks; default: the embedded tasks)")
    benchmark_limit: int | None = field_like(EvalConfig, "limit", help="with --benchmarks: score only the first N items of each task")


# train settings the sweep sets itself: what to give instead
SWEEP_REMOVED = REMOVED | {
    "k": "the sweep trains one model per k: give --ks K [K ...]",
    "near_duplicates": "the sweep trains each k with --near-duplicates off, and also align with --with-align",
    "resume": "a sweep is not resumed: it trains every point again (the prepared data is cached)",
    "force": "a sweep is not resumed: it trains every point again",
    "overwrite": "a sweep replaces a previous sweep's --out folder whole without it; any other non-empty folder is refused"}


def sweep_parser(prog: str = "goldfish sweep") -> ArgumentParser:
    return ArgumentParser([SweepArguments, *(cls for _, cls in GROUPS)], aliases=ALIASES, switches=SWITCHES, removed=SWEEP_REMOVED,
                          prog=prog, usage=f"{prog} (--model DIR | --init tiny) --data DATA --non-members FILE --out DIR "
                                           "[--ks K [K ...]] [--target EXPR] [goldfish train options]",
                          description="Train one model per k on the same data with the same goldfish train settings (and "
                                      "the standard loss as the reference), audit them together and draw the frontier: "
                                      "memorization against held-out loss change. Every goldfish train flag applies to "
                                      "every point.")


def parse_sweep(argv: list[str], prog: str = "goldfish sweep") -> tuple[TrainConfig, SweepArguments]:
    (args, *groups), _ = sweep_parser(prog).parse(argv)
    return TrainConfig(*groups), args


@dataclass(frozen=True)
class Point:
    """One model of the sweep: its name (and folder under models/), k (None: the standard loss) and variant."""

    name: str
    k: float | None
    protect: bool = False
    align: bool = False

    @property
    def family(self) -> str:
        return ("goldfish" if self.k is not None else REFERENCE) + (" + protect" if self.protect else "") + (" + align" if self.align else "")

    @property
    def label(self) -> str:
        return f"k={self.k:g}" if self.k is not None else REFERENCE


def plan_points(ks: list[float], protect: bool, align: bool) -> list[Point]:
    """The points (module docstring), the reference first."""
    points = [Point(REFERENCE, None)] + ([Point(f"{REFERENCE}+protect", None, protect=True)] if protect else [])
    for k in ks:
        points.append(Point(f"k={k:g}", k))
        if protect:
            points.append(Point(f"k={k:g}+protect", k, protect=True))
        if align:
            points.append(Point(f"k={k:g}{'+protect' if protect else ''}+align", k, protect=protect, align=True))
    return points


def point_config(train: TrainConfig, point: Point, out: Path) -> TrainConfig:
    """``train`` for one point, written into ``out``."""
    settings = train.settings() | {
        "strategy": "none" if point.k is None else train.mask.strategy, "k": point.k if point.k is not None else train.mask.k,
        "protect": list(train.mask.protect) if point.protect else [], "near_duplicates": "align" if point.align else "off",
        "output_dir": str(out)}
    return TrainConfig.from_dict(settings)


def check_sweep_out(out: Path, model: str | None) -> None:
    """Raise ValueError unless the sweep can replace ``out`` whole: it and its parent can be written, it
    is new, empty or a previous sweep's (SWEEP_FILES), and neither the base model nor the current
    folder lies in it."""
    from goldfish.cache import check_out_folder

    out = out.absolute()
    check_out_folder(out, SWEEP_FILES, "a sweep")
    if model is not None and Path(model).resolve().is_relative_to(out.resolve()):
        raise ValueError(f"--model {model} lies in --out {out}, which the sweep replaces whole; copy it out or choose another --out")


def _validate(train: TrainConfig, args: SweepArguments) -> list:
    """Check the sweep's own settings before anything is trained; returns the target's clauses."""
    if not args.ks:
        raise ValueError("give the ks to sweep: --ks K [K ...]")
    if len(set(args.ks)) != len(args.ks):
        raise ValueError(f"--ks {' '.join(f'{k:g}' for k in args.ks)}: a k is given twice")
    bad = [k for k in args.ks if not k >= 2]
    if bad:
        raise ValueError(f"--ks: every k must be >= 2 (drop 1 in k targets), got {bad[0]:g}; the standard loss is trained anyway")
    if train.mask.strategy == "none":
        raise ValueError("--strategy names the goldfish strategy of the k points (hash, static, random, paper-table); the "
                         "standard loss (none) is always trained as the reference")
    if args.with_align and train.mask.strategy != "hash":
        raise ValueError(f"--with-align trains goldfish-align-v1, which needs --strategy hash, not {train.mask.strategy}")
    if train.run.resume is not None or train.run.force:
        raise ValueError(SWEEP_REMOVED["resume"])
    if args.non_members is None:
        raise ValueError("give the held-out documents: --non-members FILE (the held-out loss is the frontier's other axis)")
    if args.audit_data is None and len(train.data.data) != 1:
        raise ValueError(f"the sweep audits its training data: give one --data source (got {len(train.data.data)}), or name "
                         "the documents to audit with --audit-data FILE")
    if train.out in (None, "trainer_output"):
        raise ValueError("give the sweep's folder: --out DIR")
    if args.samples < 0:
        raise ValueError(f"--samples must be >= 0, got {args.samples}")
    if args.benchmarks:
        from goldfish.eval import require_lm_eval

        require_lm_eval()
    clauses = parse_target(args.target or default_target(train.mask.h, args.samples > 0), args.samples > 0,
                           args.extraction_probability)
    check_sweep_out(Path(train.out), train.model.model)
    return clauses


def audit_config(train: TrainConfig, args: SweepArguments, models: dict[str, Path], out: Path) -> AuditConfig:
    """The audit of every point: the sweep's audit settings, the data settings of the training."""
    audit = {f.name: getattr(args, f.name) for f in dataclasses.fields(AuditConfig) if hasattr(args, f.name)}
    return AuditConfig(**audit | {
        "models": [str(p) for p in models.values()], "names": list(models), "baseline": REFERENCE,
        "data": args.audit_data or train.data.data[0], "out": str(out), "batch_size": args.audit_batch,
        "text_field": train.data.text_field, "assistant_turns": train.data.assistant_turns,
        "system_into_user": train.data.system_into_user, "trust_remote_code": train.model.trust_remote_code,
        "progress": not train.training.disable_tqdm})


def benchmarks(train: TrainConfig, args: SweepArguments, models: dict[str, Path], out: Path) -> dict:
    """``goldfish eval`` of every point (its report in ``out``): per point and task, the primary metric's
    score and its difference to the reference, each with its stderr; and the eval's verdict line."""
    from goldfish.eval import primary_metric, run_eval, verdict_line

    result = run_eval(EvalConfig(models=[str(p) for p in models.values()], names=list(models), baseline=REFERENCE,
                                 tasks=args.benchmark_tasks, limit=args.benchmark_limit, out=str(out), device=args.device,
                                 trust_remote_code=train.model.trust_remote_code, seed=train.training.seed,
                                 progress=not train.training.disable_tqdm))
    points = {}
    for name, tasks in result["models"].items():
        points[name] = {}
        for task, r in tasks.items():
            metric = primary_metric(task, r["metrics"])
            d = result["vs_baseline"].get(name, {}).get(task, {}).get(metric)
            points[name][task] = {"metric": metric, **r["metrics"][metric], "delta": d and d["delta"], "delta_stderr": d and d["stderr"]}
    return {"points": points, "verdict": verdict_line(result)}


def point_results(points: list[Point], audit: dict, clauses: list, sampled: bool) -> list[dict]:
    """Per point: its measures, whether it meets the target (and the clauses it fails), its held-out
    loss change with its interval, its flags, and bootstrap intervals of the plotted measures."""
    from goldfish.stats import mean_ci

    out = []
    for p in points:
        s = audit["models"][p.name]
        rows = [r for r in audit["rows"] if r["model"] == p.name and r["member"]]
        runs = [max(r["samples_longest_run"]) if sampled else r["longest_run"] for r in rows]
        verbatim = [r["samples_exact"] > 0 if sampled else r["exact_match"] for r in rows]
        values = measures(s, reference=p.name == REFERENCE)
        failed = check(clauses, values)
        change = heldout_change(s)
        out.append({"name": p.name, "label": p.label, "family": p.family, "k": p.k, "protect": p.protect, "align": p.align,
                    "meets_target": not failed, "failed": failed, "flags": s["utility"]["flags"],
                    "heldout_loss": s["utility"]["heldout_loss"]["mean"], "heldout_loss_change": values["heldout_loss_change"],
                    "heldout_loss_change_ci": change["ci"] if change else None, "measures": values,
                    "intervals": {"run": list(mean_ci(runs)), "verbatim": list(mean_ci(verbatim))}})
    return out


def recommendations(points: list[dict]) -> dict:
    """Per family of goldfish points: the recommended point (``goldfish.frontier.recommend``) or None."""
    families = dict.fromkeys(p["family"] for p in points if p["k"] is not None)
    return {f: recommend([p for p in points if p["family"] == f]) for f in families}


def run_sweep(train: TrainConfig, args: SweepArguments) -> dict:
    """Train every point, audit them together, write ``OUT`` (module docstring); returns the summary
    ({"points", "recommended_k", "recommended", "target", "settings", "wall_time_s", ...})."""
    from goldfish.audit import run_audit
    from goldfish.cache import atomic_dir
    from goldfish.train import train as train_run

    clauses = _validate(train, args)
    start = time.time()
    out = Path(train.out).absolute()
    points = plan_points(args.ks, bool(train.mask.protect), args.with_align)
    with atomic_dir(out) as tmp:
        configs = {p.name: point_config(train, p, tmp / "models" / p.name) for p in points}
        for cfg in configs.values():
            cfg.validate()  # every point before the first trains
        records = {}
        for n, (name, cfg) in enumerate(configs.items(), 1):
            logger.info("sweep: training %s (%d of %d)", name, n, len(configs))
            records[name] = train_run(cfg)
        audit = run_audit(audit_config(train, args, {n: Path(c.out) for n, c in configs.items()}, tmp / "audit"))
        results = point_results(points, audit, clauses, args.samples > 0)
        bench = benchmarks(train, args, {n: Path(c.out) for n, c in configs.items()}, tmp / "benchmarks") if args.benchmarks else None
        for p in results if bench else []:
            p["benchmarks"] = bench["points"][p["name"]]
        recommended = recommendations(results)
        plain = recommended.get("goldfish")
        summary = {
            "points": results, "recommended_k": plain and plain["k"],
            "recommended": {f: p and {"name": p["name"], "k": p["k"], "heldout_loss_change": p["heldout_loss_change"],
                                      "heldout_loss_change_ci": p["heldout_loss_change_ci"]} for f, p in recommended.items()},
            "target": " and ".join(map(str, clauses)), "target_given": args.target is not None, "reference": REFERENCE,
            "benchmarks_verdict": bench and bench["verdict"],
            "train_seconds": {n: r["train_seconds"] for n, r in records.items()}, "audit_wall_time_s": audit["wall_time_s"],
            "settings": {"sweep": dataclasses.asdict(args), "train": train.settings()} | {"out": str(out)},
            "wall_time_s": round(time.time() - start, 1)}
        _write(summary, tmp)
        _relocate(tmp, out)
    return summary


def _relocate(tmp: Path, out: Path) -> None:
    """Name ``out`` instead of the temp folder in the text files goldfish wrote (each run's goldfish.json
    and goldfish_config.yaml, the audit's summary and report): the paths they record hold after the rename."""
    for pattern in ("models/*/goldfish.json", "models/*/goldfish_config.yaml", "audit/summary.json", "audit/report.*",
                    "benchmarks/summary.json", "benchmarks/report.*"):
        for path in tmp.glob(pattern):
            path.write_text(path.read_text(encoding="utf-8").replace(str(tmp), str(out)), encoding="utf-8")


def frontier_rows(summary: dict) -> tuple[list[str], list[list]]:
    """The frontier table: per point, greedy and sampled memorization, p_exact, held-out loss change, flags, target."""
    from goldfish.report import with_interval

    samples, rows = summary["settings"]["sweep"]["samples"], []
    for p in summary["points"]:
        m = p["measures"]
        count = lambda key: "—" if m.get(key) is None else str(m[key])  # noqa: E731
        rows.append([p["name"], count("verbatim_count"), with_interval(m["longest_run_mean"], None, "{:.1f}"),
                     *([count("any_verbatim_count"), with_interval(*p["intervals"]["run"][:1], p["intervals"]["run"][1:], "{:.1f}")]
                       if samples else []),
                     with_interval(m.get("p_exact_discoverable@1000:0.5"), None, "{:.2f}"),
                     "reference" if p["name"] == summary["reference"] else with_interval(
                         p["heldout_loss_change"], p["heldout_loss_change_ci"], "{:+.1%}"),
                     ", ".join(p["flags"]) or "—", "yes" if p["meets_target"] else "no: " + "; ".join(p["failed"])])
    return (["point", "greedy verbatim", "greedy longest run (mean)",
             *([f"verbatim in any of {samples} samples", f"best-of-{samples} longest run (mean [95%])"] if samples else []),
             "(1000, 0.5)-discoverable", "Δ held-out loss vs standard", "flags", "meets target"], rows)


def recommendation_lines(summary: dict) -> list[str]:
    """The verdict in words: per family, the largest k that meets the target and what it costs."""
    from goldfish.report import with_interval

    lines = [f"target: {summary['target']}" + ("" if summary["target_given"] else " (the default)")]
    for family, rec in summary["recommended"].items():
        if rec is None:
            lines.append(f"{family}: no k meets the target without a utility flag; try smaller ks (or more protection)")
        else:
            change = with_interval(rec["heldout_loss_change"], rec["heldout_loss_change_ci"], "{:+.1%}")
            lines.append(f"{family}: the largest k that meets the target is k = {rec['k']:g}, at a held-out loss change of {change} "
                         "against the standard loss")
    passing_flagged = [p["name"] for p in summary["points"] if p["meets_target"] and p["flags"]]
    if passing_flagged:
        lines.append(f"meets the target but flagged by the utility check (not recommended): {', '.join(passing_flagged)}")
    return lines


def _write(summary: dict, tmp: Path) -> None:
    from goldfish.cache import write_text_atomic
    from goldfish.report import Report, settings_block

    report = Report("goldfish sweep: the k frontier")
    add_frontier(report, summary)
    settings_block(report, summary)
    write_text_atomic(tmp / "summary.json", json.dumps(summary, indent=2) + "\n")
    report.write(tmp)


def add_frontier(report, summary: dict) -> None:
    """The frontier's report section (the recommendation, the table, frontier.png); the experiment's report reuses it."""
    from goldfish.audit.report import rule_text

    s = summary["settings"]["sweep"]
    samples = s["samples"]
    decoding = f"greedy and {samples} samples at {rule_text(s)}" if samples else "greedy"
    report.paragraph(f"{len(summary['points'])} models trained with the same goldfish train settings, audited together on "
                     f"{s['audit_data'] or summary['settings']['train']['data'][0]} ({decoding}; held-out loss on "
                     f"{s['non_members']}). Wall time {summary['wall_time_s']:.0f} s; the audit's own report is in audit/.")
    for line in recommendation_lines(summary):
        report.paragraph(line)
    if summary.get("benchmarks_verdict"):
        report.paragraph(f"Benchmarks (goldfish eval, report in benchmarks/): {summary['benchmarks_verdict']}.")
    report.table(*frontier_rows(summary))
    clauses = parse_target(summary["target"], samples > 0, s["extraction_probability"])
    thresholds = {c.measure: c.value for c in clauses if c.op in ("<=", "<")}
    report.image("frontier.png", frontier_png(summary["points"], samples > 0, thresholds),
                 "Memorization against held-out loss change, one point per k (95% intervals)")
