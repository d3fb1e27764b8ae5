"""The k frontier: what ``goldfish sweep`` reads from one audit of many models — each model's
memorization measures beside its held-out loss change, a target those measures must meet, the
largest k that meets it, and the frontier plot.

Measures of one model (``measures``; None where the audit did not measure it):
    verbatim_count / verbatim_rate              greedy: documents whose whole suffix is reproduced
    longest_run_mean / longest_run_max          greedy: longest verbatim run (tokens), over documents
    any_verbatim_count / any_verbatim_rate      sampled: documents verbatim in at least one of the N samples
    sample_verbatim_rate                        sampled: verbatim samples among all samples
    best_longest_run_mean / best_longest_run_max   sampled: per document its best sample's longest run
    log10_p_exact_median / log10_p_exact_max    exact extraction probability (-inf, i.e. p_exact = 0, reads -1e9)
    p_exact_discoverable@N:P                    share of documents (N, P)-discoverable (Hayes et al. 2024;
                                                N, P among the audit's grid; a target may write @N for @N:0.5)
    secret_recall / secret_recall_any           chats with --secrets: the highest recall over the secrets,
                                                greedy / in any sample
    heldout_loss_change                         relative change of the held-out loss against the reference, on
                                                the held-out rows that are no near-duplicate of training text
                                                (the part the audit's utility flag reads)

A target is clauses ``MEASURE OP NUMBER`` (OP one of <=, <, >=, >, ==; NUMBER may end in %, read
as a hundredth) joined by ``and`` or commas; a model meets it when every clause holds (a measure
the audit did not measure fails its clause).
"""

from __future__ import annotations

import difflib
import operator
import re
from dataclasses import dataclass

from goldfish.audit.summary import DISCOVERABLE_N, DISCOVERABLE_P

SIMPLE_MEASURES = ("verbatim_count", "verbatim_rate", "longest_run_mean", "longest_run_max", "any_verbatim_count",
                   "any_verbatim_rate", "sample_verbatim_rate", "best_longest_run_mean", "best_longest_run_max",
                   "log10_p_exact_median", "log10_p_exact_max", "secret_recall", "secret_recall_any", "heldout_loss_change")
NEEDS = {"any_verbatim_count": "samples", "any_verbatim_rate": "samples", "sample_verbatim_rate": "samples",
         "best_longest_run_mean": "samples", "best_longest_run_max": "samples", "secret_recall_any": "samples",
         "log10_p_exact_median": "extraction_probability", "log10_p_exact_max": "extraction_probability",
         "p_exact_discoverable": "extraction_probability"}
MINUS_INFINITY = -1e9  # log10 p_exact of a suffix the rule cannot produce (summary.json: null)
OPS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt, "==": operator.eq}
_CLAUSE = re.compile(r"^\s*([a-z_0-9@.:]+)\s*(<=|>=|==|<|>)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)\s*(%?)\s*$")
EXAMPLE = "any_verbatim_count<=0 and best_longest_run_mean<=13, heldout_loss_change<=5%"


def default_target(h: int, sampled: bool) -> str:
    """No document verbatim (in any sample, when sampled) and the mean longest run (of the best
    sample) at most the hash context ``h``."""
    return f"any_verbatim_count<=0 and best_longest_run_mean<={h}" if sampled else f"verbatim_count<=0 and longest_run_mean<={h}"


@dataclass(frozen=True)
class Clause:
    measure: str
    op: str
    value: float

    def __str__(self) -> str:
        return f"{self.measure} {self.op} {self.value:g}"


def _measure(name: str, sampled: bool, probability: bool) -> str:
    """The measure ``name`` names, checked (ValueError otherwise); ``p_exact_discoverable@N`` becomes ``@N:0.5``."""
    base, _, grid = name.partition("@")
    if base == "p_exact_discoverable":
        n, _, p = grid.partition(":")
        ns, ps = [str(x) for x in DISCOVERABLE_N], [f"{x:g}" for x in DISCOVERABLE_P]
        try:
            p = f"{float(p):g}" if p else "0.5"
        except ValueError:
            p = None
        if n not in ns or p not in ps:
            raise ValueError(f"--target: {name}: want p_exact_discoverable@N or @N:P with N in {', '.join(ns)} and P in "
                             f"{', '.join(ps)} (P = 0.5 unless given)")
        name = f"{base}@{n}:{p}"
    elif grid or name not in SIMPLE_MEASURES:
        close = difflib.get_close_matches(name, [*SIMPLE_MEASURES, "p_exact_discoverable@1000"], n=3)
        raise ValueError(f"--target: unknown measure {name!r}" + (f"; did you mean {', '.join(close)}?" if close else "")
                         + f" (measures: {', '.join(SIMPLE_MEASURES)}, p_exact_discoverable@N[:P])")
    need = NEEDS.get(base)
    if need == "samples" and not sampled:
        raise ValueError(f"--target: {base} is a sampled-extraction measure: give --samples N (N >= 1)")
    if need == "extraction_probability" and not probability:
        raise ValueError(f"--target: {base} needs the exact extraction probability: leave out --no-extraction-probability")
    return name


def parse_target(text: str, sampled: bool, probability: bool) -> list[Clause]:
    """The clauses of a target expression (module docstring); ValueError naming the bad clause.
    ``sampled`` / ``probability``: whether the audit samples / computes p_exact (measures that need
    them are refused otherwise)."""
    parts = [p for p in re.split(r",|\band\b", text.strip()) if p.strip()]
    if not parts:
        raise ValueError(f"--target is empty; give clauses MEASURE OP NUMBER, e.g. {EXAMPLE!r}")
    clauses = []
    for part in parts:
        m = _CLAUSE.match(part.lower())
        if m is None:
            raise ValueError(f"--target: cannot read {part.strip()!r}: want MEASURE OP NUMBER (OP one of <=, <, >=, >, ==), "
                             f"clauses joined by 'and' or commas, e.g. {EXAMPLE!r}")
        name, op, number, percent = m.groups()
        clauses.append(Clause(_measure(name, sampled, probability), op, float(number) / (100 if percent else 1)))
    return clauses


def heldout_change(summary: dict) -> dict | None:
    """The audit's held-out loss change of one model on the ordinary held-out rows (what its flag reads)."""
    return summary["utility"].get("vs_baseline", {}).get("heldout_loss_change_ordinary")


def measures(summary: dict, reference: bool) -> dict:
    """The measures of one model's audit summary (module docstring), by name; ``reference``: the model
    the held-out loss change is measured against (its change is 0)."""
    s, sampled, prob = summary, summary.get("sampled"), summary.get("extraction_probability")
    change = heldout_change(s)
    secrets = s.get("secrets", {})
    recall = [m["recall"] for m in secrets.values() if m.get("recall") is not None]
    recall_any = [m["recall_any"] for m in (sampled or {}).get("secrets", {}).values() if m.get("recall_any") is not None]
    out = {"verbatim_count": s.get("exact_match_count"), "verbatim_rate": s.get("exact_match_rate"),
           "longest_run_mean": s.get("longest_run_mean"), "longest_run_max": s.get("longest_run_max"),
           "heldout_loss_change": 0.0 if reference else change and change["relative"],
           "secret_recall": max(recall) if recall else None, "secret_recall_any": max(recall_any) if recall_any else None}
    if sampled:
        out |= {"any_verbatim_count": sampled["any_verbatim_count"], "any_verbatim_rate": sampled["any_verbatim_rate"],
                "sample_verbatim_rate": sampled["sample_verbatim_rate"], "best_longest_run_mean": sampled["best_longest_run_mean"],
                "best_longest_run_max": sampled["best_longest_run_max"]}
    if prob:
        finite = lambda v: MINUS_INFINITY if v is None else v  # noqa: E731
        out |= {"log10_p_exact_median": finite(prob["log10_p_exact_median"]), "log10_p_exact_max": finite(prob["log10_p_exact_max"])}
        for n in DISCOVERABLE_N:
            for p in DISCOVERABLE_P:
                out[f"p_exact_discoverable@{n}:{p:g}"] = prob["discoverable"][str(n)][str(p)]
    return out


def check(clauses: list[Clause], values: dict) -> list[str]:
    """The clauses ``values`` (``measures``) fail, in words ("best_longest_run_mean 15.2 > 13"); [] when it meets them all."""
    failed = []
    for c in clauses:
        v = values.get(c.measure)
        if v is None:
            failed.append(f"{c.measure} not measured")
        elif not OPS[c.op](v, c.value):
            failed.append(f"{c.measure} = {v:.4g}, not {c.op} {c.value:g}")
    return failed


def recommend(points: list[dict]) -> dict | None:
    """The point of largest k that meets the target and is not flagged by the audit's utility check,
    among ``points`` (dicts with "k", "meets_target", "flags"); None when none does."""
    ok = [p for p in points if p["meets_target"] and not p["flags"]]
    return max(ok, key=lambda p: p["k"]) if ok else None


def frontier_png(points: list[dict], sampled: bool, thresholds: dict[str, float]) -> bytes:
    """Two panels, one marker per point (a line through each family's ks, labelled by k): the mean
    longest verbatim run (best of N samples when ``sampled``) and the share of documents verbatim
    (in any sample), each against the held-out loss change vs the reference, with 95% intervals
    (bootstrap over documents; paired over held-out rows for the loss). ``thresholds``: a dashed
    line at a target clause's value for the plotted measure."""
    from goldfish.report import figure_png, pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    panels = (("best_longest_run_mean" if sampled else "longest_run_mean", "run", "longest verbatim run, mean tokens"
               + (" (best of N samples)" if sampled else " (greedy)")),
              ("any_verbatim_rate" if sampled else "verbatim_rate", "verbatim", "documents verbatim"
               + (" in any sample" if sampled else " (greedy)")))
    families = list(dict.fromkeys(p["family"] for p in points))
    for ax, (measure, key, title) in zip(axes, panels):
        for n, family in enumerate(families):
            mine = sorted((p for p in points if p["family"] == family), key=lambda p: (p["k"] is not None, p["k"] or 0))
            xs, xerr = _with_errors([[v and 100 * v for v in (p["heldout_loss_change"], *(p["heldout_loss_change_ci"] or (None, None)))]
                                     for p in mine])
            ys, yerr = _with_errors([p["intervals"][key] for p in mine])
            ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, marker="os^Dv"[n % 5], capsize=3, linestyle="-" if len(mine) > 1 else "none",
                        label=family, color=f"C{n}")
            for x, y, p in zip(xs, ys, mine):
                ax.annotate(p["label"], (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
        if measure in thresholds:
            ax.axhline(thresholds[measure], linestyle="--", color="gray", linewidth=1, label=f"target ({measure} ≤ {thresholds[measure]:g})")
        ax.set_xlabel("held-out loss change vs the reference (%)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return figure_png(fig)


def _with_errors(estimates: list) -> tuple[list[float], list[list[float]]]:
    """[(value, low, high)] -> (values, [below, above]) for matplotlib's errorbar; a missing bound: no bar."""
    values = [v or 0.0 for v, _, _ in estimates]
    below = [v - lo if lo is not None else 0.0 for v, (_, lo, _) in zip(values, estimates)]
    above = [hi - v if hi is not None else 0.0 for v, (_, _, hi) in zip(values, estimates)]
    return values, [below, above]
