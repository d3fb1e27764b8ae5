"""The audit's summaries, per model: extraction (memorization), membership inference, the secret
scan, and utility (what the model still knows), with the comparison against a baseline model.

Sampled extraction (``sampled``, rows with ``samples_longest_run``: N continuations each):
    any_verbatim_rate / _count      documents where at least one of the N samples is the true suffix
    sample_verbatim_rate / _count   verbatim samples among all N x documents (``samples_total``)
    best_longest_run_mean / _max    per document the longest verbatim run of its best sample
    mean_longest_run_mean           per document the mean over its N samples, then the mean
Exact extraction probability (``extraction_probability``, rows with ``log10_p_exact``; null there
means p_exact = 0):
    log10_p_exact_median / _max     over documents (null: -inf, i.e. p_exact = 0)
    p_exact_zero_count              documents whose true suffix the rule cannot produce
    discoverable[n][p]              share of documents that are (n, p)-discoverable (metrics module),
                                    for n in DISCOVERABLE_N, p in DISCOVERABLE_P; discoverable_count alike

Per prompt variant (rows with ``offset`` / ``prefix_len``: --offsets / --prefix-lens): every figure
above once per value, under ``by_offset`` / ``by_prefix_len``.

Membership inference (``mia``): per score ``goldfish.audit.metrics.roc_summary``; ``ngram_overlap``:
how many non-members overlap the members by NGRAM-grams at OVERLAP_FLAG or more (they measure
duplication, not membership).

Utility, from the rows of one model:
    heldout_loss    mean NLL per target token over the held-out rows: the ``--utility-data`` rows when
                    given, else the ``--non-members`` rows (``heldout_data`` says which; token-weighted:
                    the sum of each row's ``nll * scored_tokens`` over the sum of ``scored_tokens``),
                    with its bootstrap interval over rows, and its perplexity; None without held-out rows
    heldout_loss_ordinary / _near_duplicate   the same over the held-out rows that are not / are
                    near-duplicates of the members' text (``goldfish.audit.overlap``)
    degeneration    the member rows' generations and true texts side by side: mean repeated-4-gram
                    share, mean longest repeat (tokens), distinct-2 over all of them

Against the baseline (``--baseline NAME``; default the first model), on the rows both share:
    heldout_loss_change       relative: this model's held-out loss / the baseline's - 1; and
                              heldout_loss_change_ordinary / _near_duplicate on those parts (a row
                              counts as near-duplicate when it is one for both models)
    repeated_4grams_change    this model's mean repeated-4-gram share - the baseline's
each with its paired bootstrap interval. A model is flagged (``flags``) for "held-out loss" when the
whole interval of its change on the ordinary part lies above ``LOSS_FLAG`` (+10%): held-out text
that repeats the training text is what goldfish should forget, so its loss may rise; and for
"degeneration" when the whole interval of its repeated-4-gram change lies above
``DEGENERATION_FLAG`` (+0.05): clearly worse, not noise. A flagged model's lower memorization may
come from a broken model, not from goldfish.
"""


import math
from typing import NotRequired, TypedDict

import numpy as np

from goldfish.audit.metrics import discoverable, distinct_n, roc_summary
from goldfish.audit.overlap import NGRAM, OVERLAP_FLAG
from goldfish.stats import paired_change_ci, weighted_mean_ci

MIA_SCORES = ("loss", "zlib", "min_k", "min_k_pp")
LOSS_FLAG, DEGENERATION_FLAG = 0.10, 0.05
DISCOVERABLE_N, DISCOVERABLE_P = (1, 10, 100, 1000, 10**6), (0.1, 0.5, 0.9)


# The shapes of the summaries, as summary.json holds them. TypedDicts rather than dataclasses: a summary
# is gathered across ranks, written as JSON, read back (tests, --seeds' aggregate walks its number
# leaves) and a key left out means "not measured" (no --samples, no --non-members), so the JSON is
# the value itself and one type describes it in memory and on disk, with json.dumps its one serializer.

class SampledSummary(TypedDict):
    """``sampled_summary``: best of N sampled continuations per member (``--samples N``)."""
    samples: int
    documents: int
    any_verbatim_rate: float
    any_verbatim_count: int
    sample_verbatim_rate: float
    sample_verbatim_count: int
    samples_total: int
    best_longest_run_mean: float
    best_longest_run_max: int
    mean_longest_run_mean: float
    secrets: NotRequired[dict[str, dict]]  # sampled_secret_summary, with --secrets


class ExtractionProbabilitySummary(TypedDict):
    """``extraction_probability_summary``: the exact extraction probability of the members' suffixes."""
    documents: int
    log10_p_exact_median: float | None
    log10_p_exact_max: float | None
    p_exact_zero_count: int
    discoverable: dict[str, dict[str, float]]  # {n: {p: share of members (n, p)-discoverable}}
    discoverable_count: dict[str, dict[str, int]]


class ExtractionSummary(TypedDict):
    """``extraction_summary``: greedy extraction of member rows."""
    documents: int
    exact_match_rate: float
    exact_match_count: int
    token_match_rate: float
    rouge_l_mean: float | None
    rouge_l_undefined: int
    rouge_l_tokens_mean: float
    first_divergence_mean: float
    longest_run_mean: float
    longest_run_max: int
    sampled: NotRequired[SampledSummary]
    extraction_probability: NotRequired[ExtractionProbabilitySummary]


class HeldoutLoss(TypedDict):
    """``heldout_loss``: token-weighted mean NLL of held-out rows, its bootstrap interval and perplexity."""
    mean: float
    ci: list
    perplexity: float
    tokens: int
    rows: int


class UtilitySummary(TypedDict):
    """What a model still knows (``summarize``; ``flags`` and ``vs_baseline`` from ``compare_to_baseline``)."""
    heldout_loss: HeldoutLoss | None
    heldout_loss_ordinary: HeldoutLoss | None
    heldout_loss_near_duplicate: HeldoutLoss | None
    heldout_data: str | None
    degeneration: dict | None
    flags: NotRequired[list[str]]
    vs_baseline: NotRequired[dict]


class ModelSummary(TypedDict):
    """One model's summary (``summarize``, completed by ``run_audit``): ``summary.json``'s ``models[NAME]``.
    The extraction keys (``ExtractionSummary``'s, but ``documents``) are there when members were decoded."""
    documents: int
    skipped_too_short: int
    exact_match_rate: NotRequired[float]
    exact_match_count: NotRequired[int]
    token_match_rate: NotRequired[float]
    rouge_l_mean: NotRequired[float | None]
    rouge_l_undefined: NotRequired[int]
    rouge_l_tokens_mean: NotRequired[float]
    first_divergence_mean: NotRequired[float]
    longest_run_mean: NotRequired[float]
    longest_run_max: NotRequired[int]
    sampled: NotRequired[SampledSummary]
    extraction_probability: NotRequired[ExtractionProbabilitySummary]
    prefix_mid_document: NotRequired[int]
    by_offset: NotRequired[dict[str, ExtractionSummary]]  # --offsets: per offset
    by_prefix_len: NotRequired[dict[str, ExtractionSummary]]  # --prefix-lens: per prompt length
    mia: NotRequired[dict]  # mia_summary, with --non-members
    utility: UtilitySummary
    template_drops: NotRequired[dict]  # chats
    secrets: NotRequired[dict[str, dict]]  # secret_summary, with --secrets
    timing_s: NotRequired[dict[str, float]]
    engine: NotRequired[dict]  # --engine openai / vllm


def extraction_summary(members: list[dict]) -> ExtractionSummary:
    runs = [r["longest_run"] for r in members]
    rouge = [r["rouge_l"] for r in members if r["rouge_l"] is not None]
    return {
        "documents": len(members),
        "exact_match_rate": float(np.mean([r["exact_match"] for r in members])),
        "exact_match_count": int(sum(r["exact_match"] for r in members)),
        "token_match_rate": float(np.mean([r["token_match_rate"] for r in members])),
        "rouge_l_mean": float(np.mean(rouge)) if rouge else None,
        "rouge_l_undefined": len(members) - len(rouge),  # true text without any [a-z0-9] word
        "rouge_l_tokens_mean": float(np.mean([r["rouge_l_tokens"] for r in members])),
        "first_divergence_mean": float(np.mean([r["first_divergence"] for r in members])),
        "longest_run_mean": float(np.mean(runs)),
        "longest_run_max": int(max(runs)),
    } | ({"sampled": sampled_summary(members)} if "samples_longest_run" in members[0] else {}) | (
        {"extraction_probability": extraction_probability_summary(members)} if "log10_p_exact" in members[0] else {})


def sampled_summary(members: list[dict]) -> SampledSummary:
    """The sampled-extraction figures of member rows (module docstring)."""
    runs = [r["samples_longest_run"] for r in members]
    exact = [r["samples_exact"] for r in members]
    total = sum(len(x) for x in runs)
    best = [max(x) for x in runs]
    return {"samples": len(runs[0]), "documents": len(members),
            "any_verbatim_rate": float(np.mean([e > 0 for e in exact])), "any_verbatim_count": int(sum(e > 0 for e in exact)),
            "sample_verbatim_rate": sum(exact) / total, "sample_verbatim_count": int(sum(exact)), "samples_total": total,
            "best_longest_run_mean": float(np.mean(best)), "best_longest_run_max": int(max(best)),
            "mean_longest_run_mean": float(np.mean([np.mean(x) for x in runs]))}


def extraction_probability_summary(members: list[dict]) -> ExtractionProbabilitySummary:
    """The exact-extraction-probability figures of member rows (module docstring)."""
    log10 = np.array([-math.inf if r["log10_p_exact"] is None else r["log10_p_exact"] for r in members])
    ln = log10 * math.log(10)
    found = {str(n): {str(p): sum(discoverable(x, n, p) for x in ln) for p in DISCOVERABLE_P} for n in DISCOVERABLE_N}
    finite = lambda v: float(v) if math.isfinite(v) else None  # noqa: E731
    return {"documents": len(members), "log10_p_exact_median": finite(np.median(log10)), "log10_p_exact_max": finite(log10.max()),
            "p_exact_zero_count": int(np.sum(log10 == -math.inf)),
            "discoverable": {n: {p: c / len(members) for p, c in by_p.items()} for n, by_p in found.items()},
            "discoverable_count": found}


VARIANTS = {"offset": "by_offset", "prefix_len": "by_prefix_len"}  # a row field of --offsets / --prefix-lens: its summary key


def mia_summary(members: list[dict], non: list[dict], reference: bool) -> dict:
    """ROC summary of each membership score (one score per document: the row of its first offset or
    prefix length; every row of a document holds the same scores)."""
    for key in VARIANTS:
        first = min((r[key] for r in members if key in r), default=None)
        members = [r for r in members if r.get(key) == first]
    names = MIA_SCORES + (("reference",) if reference else ())
    return {k: roc_summary([r[k] for r in members], [r[k] for r in non]) for k in names} | {
        "non_members": len(non), "ngram_overlap": ngram_overlap_summary(non)}


def ngram_overlap_summary(non: list[dict]) -> dict | None:
    """How many non-members overlap the members by 13-grams at OVERLAP_FLAG or more (rows'
    ``ngram_overlap``, ``goldfish.audit.overlap``); None when the rows carry no overlap."""
    if not non or "ngram_overlap" not in non[0]:
        return None
    values = [r["ngram_overlap"] for r in non if r["ngram_overlap"] is not None]
    above = sum(v >= OVERLAP_FLAG for v in values)
    return {"n": NGRAM, "threshold": OVERLAP_FLAG, "non_members": len(non), "measured": len(values),
            "above_threshold": above, "above_threshold_share": above / len(non),
            "mean": float(np.mean(values)) if values else None}


def heldout_loss(non: list[dict]) -> HeldoutLoss | None:
    """The held-out loss of held-out rows (module docstring), or None without any."""
    if not non:
        return None
    loss, low, high = weighted_mean_ci([r["nll"] * r["scored_tokens"] for r in non], [r["scored_tokens"] for r in non])
    return {"mean": loss, "ci": [low, high], "perplexity": math.exp(loss), "tokens": int(sum(r["scored_tokens"] for r in non)),
            "rows": len(non)}


def degeneration(members: list[dict]) -> dict | None:
    """Degeneration of the member rows' generations beside that of their true texts (None: nothing decoded)."""
    rows = [r for r in members if "generated_ids" in r]
    if not rows:
        return None

    def side(ids_key, prefix):
        shares = [r[f"{prefix}repeated_4grams"] for r in rows if r[f"{prefix}repeated_4grams"] is not None]
        return {"repeated_4grams": float(np.mean(shares)) if shares else None,
                "longest_repeat": float(np.mean([r[f"{prefix}longest_repeat"] for r in rows])),
                "distinct_2": distinct_n([r[ids_key] for r in rows], 2)}

    return {"generated": side("generated_ids", "generated_"), "true": side("true_ids", "true_"), "rows": len(rows)}


def heldout_rows(rows: list[dict]) -> list[dict]:
    """The rows the held-out loss reads: the --utility-data rows when there are any, else the non-members."""
    return [r for r in rows if r.get("utility")] or [r for r in rows if not r["member"]]


def heldout_parts(held: list[dict]) -> dict:
    """``heldout_loss_ordinary`` and ``heldout_loss_near_duplicate``: the held-out loss of the rows
    that are not / are near-duplicates of training text (rows' ``near_duplicate``; none: all ordinary)."""
    return {"heldout_loss_ordinary": heldout_loss([r for r in held if not r.get("near_duplicate")]),
            "heldout_loss_near_duplicate": heldout_loss([r for r in held if r.get("near_duplicate")])}


def summarize(rows: list[dict], skipped: int, reference: bool) -> ModelSummary:
    """One model's summary from its rows (members, non-members, --utility-data rows)."""
    members = [r for r in rows if r["member"]]
    non = [r for r in rows if not r["member"] and not r.get("utility")]
    held = heldout_rows(rows)
    s = {"documents": len(members), "skipped_too_short": skipped}
    if members and "exact_match" in members[0]:
        s.update(extraction_summary(members))
        s["prefix_mid_document"] = sum(r.get("prefix_start", 0) > 0 for r in members)
        for key, name in VARIANTS.items():
            values = sorted({r[key] for r in members if key in r})
            if values:
                s[name] = {str(v): extraction_summary([r for r in members if r.get(key) == v]) for v in values}
    if non and members:
        s["mia"] = mia_summary(members, non, reference)
    s["utility"] = {"heldout_loss": heldout_loss(held), **heldout_parts(held),
                    "heldout_data": "--utility-data" if held and held[0].get("utility") else "--non-members" if held else None,
                    "degeneration": degeneration(members)}
    return s


def row_key(r: dict) -> tuple:
    """What identifies a row of one model among the others: (member, --utility-data row, id)."""
    return r["member"], bool(r.get("utility")), r["id"]


def compare_to_baseline(summaries: dict[str, ModelSummary], rows: list[dict], baseline: str) -> None:
    """Add ``utility.vs_baseline`` and ``utility.flags`` to each model's summary (module docstring)."""
    by_model: dict[str, dict] = {}
    for r in rows:
        by_model.setdefault(r["model"], {})[row_key(r)] = r
    base = by_model.get(baseline, {})

    def loss_change(mine, keys):
        if not keys:
            return None
        n = [mine[k]["scored_tokens"] for k in keys]
        value, low, high = paired_change_ci([mine[k]["nll"] * c for k, c in zip(keys, n)],
                                            [base[k]["nll"] * c for k, c in zip(keys, n)], n, relative=True)
        return {"relative": value, "ci": [low, high], "rows": len(keys)}

    for name, s in summaries.items():
        utility = s["utility"]
        utility["flags"] = []
        if name == baseline:
            continue
        mine = by_model.get(name, {})
        held = [row_key(r) for r in heldout_rows(list(mine.values())) if row_key(r) in base]
        shared_gen = [k for k in mine if k[0] and k in base and mine[k].get("generated_repeated_4grams") is not None
                      and base[k].get("generated_repeated_4grams") is not None]
        change = {"baseline": baseline}
        if held:
            dup = {k: bool(mine[k].get("near_duplicate")) and bool(base[k].get("near_duplicate")) for k in held}
            change["heldout_loss_change"] = loss_change(mine, held)
            change["heldout_loss_change_ordinary"] = ordinary = loss_change(mine, [k for k in held if not dup[k]])
            change["heldout_loss_change_near_duplicate"] = loss_change(mine, [k for k in held if dup[k]])
            if ordinary and ordinary["ci"][0] is not None and ordinary["ci"][0] > LOSS_FLAG:
                utility["flags"].append("held-out loss")
        if shared_gen:
            value, low, high = paired_change_ci([mine[k]["generated_repeated_4grams"] for k in shared_gen],
                                                [base[k]["generated_repeated_4grams"] for k in shared_gen],
                                                [1] * len(shared_gen), relative=False)
            change["repeated_4grams_change"] = {"difference": value, "ci": [low, high], "rows": len(shared_gen)}
            if low is not None and low > DEGENERATION_FLAG:
                utility["flags"].append("degeneration")
        utility["vs_baseline"] = change


def secret_summary(rows: list[dict], secrets) -> dict:
    """Per secret, recall and spill on members and non-members (the rows are only read)."""
    from goldfish.audit.secret_scan import secret_rates, training_values

    members = [r for r in rows if r["member"] and "generated_text" in r]
    non = [r for r in rows if not r["member"] and "generated_text" in r]
    known = training_values(members, secrets)
    out = secret_rates(members, secrets, known)
    for name, rates in secret_rates(non, secrets, known).items():
        out[name]["non_members"] = rates
    return out


def leaked_secrets(rows: list[dict], secrets) -> list[list[str] | None]:
    """Per row, the training secrets (values the members' true texts hold) its generation holds, sorted;
    None for a row without a generation (the rows are only read)."""
    from goldfish.audit.secret_scan import training_values

    known = training_values([r for r in rows if r["member"] and "generated_text" in r], secrets)
    values = {v for vs in known.values() for v in vs}
    return [sorted(v for v in values if v in r["generated_text"]) if "generated_text" in r else None for r in rows]


def sampled_secret_summary(rows: list[dict], secrets) -> dict:
    """Per secret, over the N sampled replies of each turn (``samples_text``): ``recall_any`` /
    ``spill_any`` (any of the N holds it), ``recall_share`` / ``spill_share`` (share of all samples),
    on members and, under ``non_members``, on --non-members prompts."""
    from goldfish.audit.secret_scan import secret_rates, training_values

    members = [r for r in rows if r["member"] and "samples_text" in r]
    non = [r for r in rows if not r["member"] and "samples_text" in r]
    known = training_values(members, secrets)
    rename = {"recall": "recall_any", "spill": "spill_any"}
    out = {name: {rename.get(k, k): v for k, v in rates.items()}
           for name, rates in secret_rates(members, secrets, known, "samples_text").items()}
    for name, rates in secret_rates(non, secrets, known, "samples_text").items():
        out[name]["non_members"] = {rename.get(k, k): v for k, v in rates.items()}
    return out
