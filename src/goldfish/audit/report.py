"""The audit's files and report sections: ``results.jsonl``, ``summary.json``, ``report.md``,
``report.html`` and PNG plots (built with ``goldfish.report``), written as one set (the folder
replaced whole)."""

from __future__ import annotations

import html
import json
from pathlib import Path

from goldfish.audit.summary import DEGENERATION_FLAG, LOSS_FLAG, ModelSummary
from goldfish.cache import atomic_dir
from goldfish.report import (
    Report,
    with_interval,
    figure_png,
    histogram_png,
    md_cell,
    pyplot,
    settings_block,
    versions,
)

SUMMARY_COLUMNS = [
    ("documents", "docs"), ("skipped_too_short", "skipped"), ("exact_match_rate", "verbatim"),
    ("token_match_rate", "token match"), ("rouge_l_mean", "Rouge-L"), ("rouge_l_tokens_mean", "Rouge-L (tokens)"),
    ("longest_run_mean", "longest run (mean)"), ("longest_run_max", "longest run (max)"),
]


def both_halves_rows(result: dict) -> tuple[list[str], list[list]]:
    """The first table: per model, memorization (verbatim, longest run, MIA) beside utility (held-out
    loss and its change against the baseline, degeneration of the generations beside the true texts')."""
    rows = []
    for name, s in result["models"].items():
        u = s["utility"]
        loss, change, deg = u["heldout_loss"], u.get("vs_baseline", {}), u["degeneration"]
        loss_change = change.get("heldout_loss_change_ordinary")  # what the flag reads
        rep = change.get("repeated_4grams_change")
        mia = s.get("mia", {}).get("loss")
        rows.append([
            name, s["documents"], s.get("exact_match_rate"), with_interval(s.get("longest_run_mean"), None, "{:.1f}"),
            with_interval(mia["auc"], mia["auc_ci"], "{:.2f}") if mia else "—",
            with_interval(loss["mean"], loss["ci"]) if loss else "— (no --non-members)",
            "baseline" if name == result["baseline"] else with_interval(loss_change["relative"], loss_change["ci"], "{:+.1%}") if loss_change else "—",
            f"{with_interval(deg['generated']['repeated_4grams'], None)} (true {with_interval(deg['true']['repeated_4grams'], None)})" if deg else "—",
            "baseline" if name == result["baseline"] else with_interval(rep["difference"], rep["ci"], "{:+.3f}") if rep else "—",
            ", ".join(u["flags"]) or "—"])
    return (["model", "docs/turns", "verbatim", "longest run (mean)", "MIA loss AUC", "held-out loss (nats/token)",
             f"Δ held-out loss vs {result['baseline']} (ordinary rows)", "repeated 4-grams (generated / true)",
             f"Δ repeated 4-grams vs {result['baseline']}", "flags"], rows)


def verdict_lines(result: dict) -> list[str]:
    """One line per model against the baseline: memorization beside utility, flagged models said so."""
    base = result["models"][result["baseline"]]
    lines = []
    for name, s in result["models"].items():
        if name == result["baseline"]:
            continue
        u = s["utility"]
        change = u.get("vs_baseline", {})
        parts = [f"verbatim {_rate(base.get('exact_match_rate'))} → {_rate(s.get('exact_match_rate'))}",
                 f"longest run {with_interval(base.get('longest_run_mean'), None, '{:.1f}')} → {with_interval(s.get('longest_run_mean'), None, '{:.1f}')}"]
        if change.get("heldout_loss_change"):
            c, near = change["heldout_loss_change_ordinary"], change["heldout_loss_change_near_duplicate"]
            parts.append(f"held-out loss {with_interval(c['relative'], c['ci'], '{:+.1%}')}" if c else "held-out loss: no ordinary row")
            if near:
                parts[-1] += (f" (ordinary rows; on the {near['rows']} near-duplicates of training text "
                              f"{with_interval(near['relative'], near['ci'], '{:+.1%}')})")
        if change.get("repeated_4grams_change"):
            c = change["repeated_4grams_change"]
            parts.append(f"repeated 4-grams {with_interval(c['difference'], c['ci'], '{:+.3f}')}")
        if u["flags"]:
            verdict = (f"FLAGGED ({', '.join(u['flags'])}): clearly worse than {result['baseline']}, so its lower "
                       "memorization may come from a broken model; not a win")
        elif not change.get("heldout_loss_change"):
            verdict = "utility not measured on held-out data: give --non-members to know whether the model still learned"
        else:
            verdict = f"not flagged: utility within the flag thresholds of {result['baseline']}"
        lines.append(f"{name} vs {result['baseline']}: {'; '.join(parts)} — {verdict}.")
    return lines


def _near_duplicate_note(report: Report, result: dict) -> None:
    """The held-out loss split into ordinary rows and near-duplicates of training text, when there are any."""
    rows = []
    for name, s in result["models"].items():
        u = s["utility"]
        near, ordinary = u.get("heldout_loss_near_duplicate"), u.get("heldout_loss_ordinary")
        if near:
            rows.append([name, with_interval(ordinary["mean"], ordinary["ci"]) if ordinary else "—", ordinary["rows"] if ordinary else 0,
                         with_interval(near["mean"], near["ci"]), near["rows"]])
    if rows:
        report.paragraph(f"Held-out loss on {rows[0][2] + rows[0][4]} {result['models'][rows[0][0]]['utility']['heldout_data']} "
                         "rows, split: a row is a near-duplicate of training text under goldfish-align-v1's rule (MinHash "
                         "candidates, LCS similarity ≥ 0.6 with a member's targets). Those repeat what goldfish should forget, "
                         "so the flag and the Δ in the verdicts read the ordinary rows.")
        report.table(["model", "held-out loss, ordinary", "ordinary rows", "held-out loss, near-duplicates", "near-duplicate rows"], rows)


def summary_rows(models: dict[str, ModelSummary]) -> tuple[list[str], list[list]]:
    headers = ["model"] + [label for _, label in SUMMARY_COLUMNS]
    return headers, [[name] + [s.get(key, "") for key, _ in SUMMARY_COLUMNS] for name, s in models.items()]


def add_examples(report: Report, rows: list[dict], per_model: int = 3) -> None:
    """The most-memorized documents of each model, generated vs true, every reproduced run of
    ``goldfish.audit.metrics.MIN_RUN`` or more tokens marked in both."""
    by_model: dict[str, list[dict]] = {}
    for r in rows:
        if r["member"] and "generated" in r:
            by_model.setdefault(r["model"], []).append(r)
    for name, rs in by_model.items():
        for r in sorted(rs, key=lambda r: (-r["longest_run"], -(r["rouge_l"] or 0.0)))[:per_model]:
            rouge = "undefined (no words)" if r["rouge_l"] is None else f"{r['rouge_l']:.2f}"
            label = (f"{name} · {r['id']} · longest run {r['longest_run']} tokens, Rouge-L {rouge}"
                     f"{' · verbatim' if r['exact_match'] else ''}")
            runs = r["reproduced"]
            report.comparison(label, r["prefix_tail"], r["generated"], r["true_suffix"], runs["generated"], runs["true"])


def _rate(v) -> str:
    return "—" if v is None else f"{100 * v:.0f}%"


def _of(rate, turns) -> str:
    """A rate with its denominator: "50% of 4 turns"; "—" without turns."""
    return "—" if rate is None or not turns else f"{_rate(rate)} of {turns} turns"


def _count(count: int, total: int) -> str:
    return f"{count} / {total} ({100 * count / total:.0f}%)" if total else "—"


def rule_text(settings: dict) -> str:
    """The sampling rule in words: "T = 0.7, top-p 0.9"."""
    return ", ".join([f"T = {settings['temperature']:g}"] + ([f"top-k {settings['top_k']}"] if settings.get("top_k") else [])
                     + ([f"top-p {settings['top_p']:g}"] if settings["top_p"] < 1 else []))


def sampled_rows(models: dict[str, ModelSummary]) -> tuple[list[str], list[list]]:
    """Greedy beside sampled, per model: verbatim documents and samples (counts beside rates), longest runs."""
    rows = []
    for name, s in models.items():
        m = s.get("sampled")
        if not m:
            continue
        rows.append([name, s["documents"], _count(s["exact_match_count"], s["documents"]),
                     _count(m["any_verbatim_count"], m["documents"]), _count(m["sample_verbatim_count"], m["samples_total"]),
                     f"{s['longest_run_mean']:.1f} / {s['longest_run_max']}",
                     f"{m['best_longest_run_mean']:.1f} / {m['best_longest_run_max']}", f"{m['mean_longest_run_mean']:.1f}"])
    n = next(m["samples"] for m in (s.get("sampled") for s in models.values()) if m)
    return (["model", "docs", "greedy verbatim", f"verbatim in any of {n} samples", "verbatim samples",
             "greedy longest run (mean / max)", f"best-of-{n} longest run (mean / max)", f"mean-of-{n} longest run"], rows)


def extraction_probability_rows(models: dict[str, ModelSummary]) -> tuple[list[str], list[list]]:
    """Per model and p: the (n, p)-discoverable documents for each n, with the median log10 p_exact."""
    from goldfish.audit.summary import DISCOVERABLE_N, DISCOVERABLE_P

    rows = []
    for name, s in models.items():
        m = s.get("extraction_probability")
        if not m:
            continue
        median = "−∞" if m["log10_p_exact_median"] is None else f"{m['log10_p_exact_median']:.2f}"
        for p in DISCOVERABLE_P:
            rows.append([name, median, _count(m["p_exact_zero_count"], m["documents"]), f"≥ {p:g}"]
                        + [_count(m["discoverable_count"][str(n)][str(p)], m["documents"]) for n in DISCOVERABLE_N])
    return (["model", "median log10 p_exact", "p_exact = 0", "P(verbatim in n samples)"]
            + [f"n = {n:,}" for n in DISCOVERABLE_N], rows)


def _sampling_sections(report: Report, result: dict) -> None:
    """Greedy beside sampled extraction, and the exact extraction probability, when measured."""
    models, settings = result["models"], result["settings"]
    if any("sampled" in s for s in models.values()):
        report.heading("Greedy and sampled extraction")
        report.paragraph(f"{settings['samples']} samples per prompt at {rule_text(settings)} (seed {settings['sample_seed']}) "
                         "beside the greedy decoding: a deployed model samples, and an attacker can ask many times.")
        report.table(*sampled_rows(models))
    if any("extraction_probability" in s for s in models.values()):
        report.heading("Exact extraction probability")
        report.paragraph(f"p_exact: the probability that one sample at {rule_text(settings)} reproduces the true "
                         f"{'reply' if settings.get('kind') == 'chat' else 'suffix'} exactly, from the model's own "
                         "probabilities (teacher-forced; 0 when a true token falls outside the top-k / top-p set). A document "
                         "is (n, p)-discoverable (Hayes et al. 2024) when 1 − (1 − p_exact)^n ≥ p: the documents an attacker "
                         "asking n times extracts with probability at least p.")
        report.table(*extraction_probability_rows(models))


def add_secrets(report: Report, models: dict, rows: list[dict], per_model: int = 5) -> None:
    """Recall and spill per model and secret, then generations that hold a training secret (marked)."""
    report.heading("Secrets")
    report.paragraph("recall: of the turns whose training reply holds the secret, the share whose generation holds it too; "
                     "spill: of the other turns, the share whose generation holds a string of that secret found in the "
                     "training replies. Non-member columns: the same on --non-members prompts.")
    table, absent, sampled = [], set(), any("sampled" in s for s in models.values())
    for name, s in models.items():
        for secret, m in s.get("secrets", {}).items():
            non = m.get("non_members", {})
            if not m["turns_with_secret"] and not non.get("turns_with_secret"):
                absent.add(secret)  # in no training reply: nothing to recall, no string to spill
                continue
            row = [name, secret, _rate(m["recall"]), m["turns_with_secret"], _rate(m["spill"]),
                   _of(non.get("recall"), non.get("turns_with_secret")), _rate(non.get("spill"))]
            if sampled:
                x, n = s.get("sampled", {}).get("secrets", {}).get(secret, {}), s.get("sampled", {}).get("samples", 0)
                of = lambda rate, total: "—" if rate is None else _count(round(rate * total), total)  # noqa: E731
                xn = x.get("non_members", {})
                row += [of(x.get("recall_any"), x.get("turns_with_secret", 0)), of(x.get("recall_share"), n * x.get("turns_with_secret", 0)),
                        of(x.get("spill_any"), x.get("turns_without", 0)), of(xn.get("spill_any"), xn.get("turns_without", 0))]
            table.append(row)
    report.table(["model", "secret", "recall", "turns with it", "spill", "non-member recall", "non-member spill"]
                 + (["recall, any sample", "recall, of all samples", "spill, any sample", "non-member spill, any sample"]
                    if sampled else []), table)
    if absent:
        report.paragraph(f"Not in any training or held-out reply (left out of the table): {', '.join(sorted(absent))}.")
    for name in models:
        leaking = [r for r in rows if r["model"] == name and r.get("leaked")][:per_model]
        if not leaking:
            continue
        report.heading(f"Leaking generations: {name}")
        for r in leaking:
            text = r["generated_text"]
            marked_md, marked_html = text, html.escape(text)
            for v in r["leaked"]:
                marked_md = marked_md.replace(v, f"**{v}**")
                marked_html = marked_html.replace(html.escape(v), f"<mark>{html.escape(v)}</mark>")
            who = "member" if r["member"] else "non-member"
            report.raw(f"*{r['id']}* ({who}) …{md_cell(r['prefix_tail'][-120:])} ⟶\n\n> {marked_md.strip()}\n",
                       f"<p class='muted'>{html.escape(r['id'])} ({who}) …{html.escape(r['prefix_tail'][-120:])} ⟶</p>"
                       f"<pre>{marked_html.strip()}</pre>")


def tpr_cell(m: dict, fpr: float) -> str:
    """The TPR at an FPR with its interval, or why it has none."""
    from goldfish.audit.metrics import fpr_label

    key = f"tpr_at_{fpr_label(fpr)}_fpr"
    if m[key] is None:
        return f"not resolvable (≥ {m['min_fpr']:.1%} FPR)"
    if m[f"{key}_ci"] is None:
        return f"{m[key]:.3f} (no interval: needs ≥ {m['tpr_ci_min_non_members'][fpr_label(fpr)]:,} non-members)"
    return with_interval(m[key], m[f"{key}_ci"], "{:.3f}")


def add_mia(report: Report, mia: dict, dropped: int | None) -> None:
    """Membership inference: per model and score the ROC AUC and TPR at low FPR with their intervals,
    the non-members' 13-gram overlap with the members, and the non-members --drop-overlap left out."""
    from goldfish.audit.metrics import FPRS, MIN_TAIL, fpr_label

    report.heading("Membership inference")
    scores = [k for k in next(iter(mia.values())) if k not in ("non_members", "ngram_overlap")]
    report.table(["model", "score", "ROC AUC [95% interval]"] + [f"TPR @ {fpr_label(f)} FPR" for f in FPRS],
                 [[name, k, with_interval(m[k]["auc"], m[k]["auc_ci"])] + [tpr_cell(m[k], f) for f in FPRS]
                  for name, m in mia.items() for k in scores])
    n = next(iter(mia.values()))["non_members"]
    report.paragraph(f"{n} non-members: a TPR at an FPR below one over that count cannot be resolved (the first false "
                     f"positive already exceeds it); its bootstrap interval (members and non-members resampled apart) needs "
                     f"the threshold to pass at least {MIN_TAIL} non-members, FPR × non-members ≥ {MIN_TAIL}."
                     + (f" --drop-overlap left out {dropped} non-member record(s) that share their content with a --data "
                        "record." if dropped is not None else ""))
    for name, m in mia.items():
        o = m.get("ngram_overlap")
        if o and o["above_threshold"]:
            report.paragraph(f"Warning ({name}): {_count(o['above_threshold'], o['non_members'])} non-members overlap the "
                             f"members by {o['n']}-grams at {o['threshold']:.0%} or more (summary.json: "
                             "mia.ngram_overlap): they measure duplication, not membership (MIMIR filters non-members at "
                             f"{o['threshold']:g}); give non-members that do not repeat the training text.")


def variant_png(models: dict, by: str, xlabel: str) -> bytes:
    """Verbatim rate and mean longest run against a prompt variant (``by``: "by_offset" or
    "by_prefix_len" of each model's summary), one line per model."""
    fig, axes = pyplot().subplots(1, 2, figsize=(10, 3.6), dpi=110)
    for name, s in models.items():
        values = sorted(s.get(by, {}), key=int)
        for ax, key in zip(axes, ("exact_match_rate", "longest_run_mean")):
            ax.plot([int(v) for v in values], [s[by][v][key] for v in values], marker="o", label=name)
    for ax, title in zip(axes, ("verbatim rate", "longest verbatim run (mean tokens)")):
        ax.set_xlabel(xlabel)
        ax.set_title(title, fontsize=10)
        ax.legend()
    fig.tight_layout()
    return figure_png(fig)


# the prompt variants' report sections: (settings key, summary key, heading, column, plot file, x label, caption)
VARIANT_SECTIONS = (
    ("offsets", "by_offset", "By prefix offset", "prefix offset", "offsets.png", "prefix start (tokens into the document)",
     "Verbatim rate and longest run against where the prefix starts"),
    ("prefix_lens", "by_prefix_len", "By prefix length", "prefix length", "prefix_lens.png", "prefix length (tokens)",
     "Verbatim rate and longest run against the prefix length (suffix fixed)"),
)


def _extraction_notes(report: Report, result: dict) -> None:
    """Undefined text Rouge-L, prefixes that start mid-document, and the per-offset or per-prefix-length view."""
    models = result["models"]
    undefined = {n: s["rouge_l_undefined"] for n, s in models.items() if s.get("rouge_l_undefined")}
    if undefined:
        n = max(undefined.values())
        report.paragraph(f"Text Rouge-L is undefined for {n} document(s) whose true suffix has no alphanumeric word (rouge-score "
                         "scores them 0 even when reproduced exactly); they are left out of the Rouge-L mean and counted in "
                         "summary.json as rouge_l_undefined. Token Rouge-L covers them.")
    variant = next((v for v in VARIANT_SECTIONS if result["settings"].get(v[0])), None)
    if variant:
        _, by, heading, column, png, xlabel, caption = variant
        report.heading(heading)
        rows = [[n, int(v), m["documents"], m["exact_match_rate"], m["longest_run_mean"], m["rouge_l_tokens_mean"]]
                + ([m["sampled"]["any_verbatim_rate"]] if "sampled" in m else [])
                for n, s in models.items() for v, m in sorted(s.get(by, {}).items(), key=lambda kv: int(kv[0]))]
        sampled = any("sampled" in s for s in models.values())
        report.table(["model", column, "docs", "verbatim", "longest run (mean)", "Rouge-L (tokens)"]
                     + (["verbatim in any sample"] if sampled else []), rows)
        if by == "by_prefix_len":
            report.paragraph("Each length reads the same documents (one too short for the longest prefix is skipped at every "
                             "length) and the same suffix: the document's last --suffix-len tokens, after the L tokens before "
                             "it. A short prefix starts mid-document.")
        report.image(png, variant_png(models, by, xlabel), caption)
    elif any(s.get("prefix_mid_document") for s in models.values()):
        n = max(s.get("prefix_mid_document", 0) for s in models.values())
        report.paragraph(f"Warning: for {n} document(s) the prefix starts mid-document (--prefix-len shorter than the text "
                         "before the suffix). A model with absolute positions saw those tokens at other positions in "
                         "training and may fail to continue text it did memorize; the extraction convention is a prefix "
                         "that starts where the document starts (the default, or --offsets 0).")


AUDIT_FILES = ("results.jsonl", "summary.json", "report.md", "report.html", "rouge_l_hist.png", "offsets.png", "prefix_lens.png")


def _prefix_text(settings: dict) -> str:
    """The prefix length in words: "32", "16, 32 and 64 (--prefix-lens)" or "all preceding"."""
    if settings.get("prefix_lens"):
        *rest, last = [str(n) for n in settings["prefix_lens"]]
        return f"{', '.join(rest)} and {last} (--prefix-lens)" if rest else f"{last} (--prefix-lens)"
    return str(settings["prefix_len"] or "all preceding")


def _protocol_text(settings: dict) -> str:
    """What the audit decoded, in words: chat turns or text suffixes after prefixes."""
    if settings.get("kind") != "chat":
        return f"suffix of {settings['suffix_len']} tokens after a prefix of {_prefix_text(settings)} tokens"
    return ("each trained assistant turn, prompted with the conversation before it (generation prompt included), "
            "decoded for as many tokens as the true reply and scored up to the model's own end-of-turn token (the reply "
            "a chat UI shows)" + (f"; the secret scan reads the reply decoded up to {settings['min_new_tokens']} "
                                  "tokens (--min-new-tokens), up to the same end-of-turn token"
                                  if settings.get("min_new_tokens") else ""))


def write_report(result: dict, out: str | Path) -> None:
    """The audit's files (AUDIT_FILES: results.jsonl, summary.json, report.md, report.html and the
    plots) as one set: written into a temp folder beside ``out``, which then replaces ``out`` in one
    rename, so a reader never sees files of two runs together (see ``goldfish.cache.check_out_folder``)."""
    out = Path(out).absolute()
    rows = result["rows"]
    summary = {"models": result["models"], "baseline": result["baseline"], "settings": result["settings"],
               "wall_time_s": result["wall_time_s"], "versions": versions()} | (
        {"non_members_dropped": result["non_members_dropped"]} if "non_members_dropped" in result else {})
    report = Report("Memorization audit")
    chat = result["settings"].get("kind") == "chat"
    report.paragraph(f"{len(result['models'])} model(s) on {result['settings']['data']}: {_protocol_text(result['settings'])}, "
                     f"{'greedy' if result['settings']['beams'] == 1 else str(result['settings']['beams']) + '-beam'} decoding. "
                     f"Wall time {result['wall_time_s']:.1f} s.")
    report.heading("Memorization and utility")
    for line in verdict_lines(result):
        report.paragraph(line)
    report.table(*both_halves_rows(result))
    report.paragraph(f"Held-out loss: mean NLL per target token on --non-members (bootstrap 95% interval over "
                     f"{'turns' if chat else 'documents'}); Δ: the paired change against {result['baseline']} on the same rows. "
                     "Repeated 4-grams: the share of a generation's 4-grams that already occurred in it (the true texts' "
                     "share beside it). A model is flagged when the whole interval of its held-out-loss change lies above "
                     f"{LOSS_FLAG:+.0%}, or that of its repeated-4-gram change above {DEGENERATION_FLAG:+.2f}.")
    _near_duplicate_note(report, result)
    report.heading("Extraction")
    report.table(*summary_rows(result["models"]))
    _extraction_notes(report, result)
    _sampling_sections(report, result)
    hist = {name: [r["rouge_l"] for r in rows if r["model"] == name and r["member"] and r.get("rouge_l") is not None]
            for name in result["models"]}
    hist = {k: v for k, v in hist.items() if v}
    if hist:
        unit, what = ("turns", "reply") if chat else ("documents", "suffix")
        report.image("rouge_l_hist.png", histogram_png(hist, f"Rouge-L of generated vs true {what}", "Extraction Rouge-L", ylabel=unit),
                     f"Rouge-L per {unit[:-1]}, one histogram per model")
    mia = {name: s["mia"] for name, s in result["models"].items() if "mia" in s}
    if mia:
        add_mia(report, mia, result.get("non_members_dropped"))
    if any("secrets" in s for s in result["models"].values()):
        add_secrets(report, result["models"], rows)
    report.heading("Most-memorized turns" if result["settings"].get("kind") == "chat" else "Most-memorized documents")
    add_examples(report, rows)
    settings_block(report, result)
    with atomic_dir(out) as tmp:
        (tmp / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        report.write(tmp)
