"""Memorization and membership-inference metrics.

Extraction metrics compare a generated suffix with the true one (token ids unless said otherwise):
    exact_match         the whole suffix is identical (the paper code's "memorized" document)
    token_match_rate    share of suffix positions i with generated[i] == true[i]
    first_divergence    index of the first position that differs (= suffix length if none)
    longest_run         longest contiguous run of true-suffix tokens reproduced exactly, anywhere in
                        the generation (longest common substring of the two id sequences)
    reproduced_runs     every such run of at least MIN_RUN tokens, as token spans of either sequence
                        (what the report marks)
    rouge_l             text Rouge-L F-measure, identical to google's rouge-score ``rougeL`` with its
                        default tokenizer (lowercase, runs of [a-z0-9] as tokens, no stemming);
                        None (undefined) when the true text has no such word: rouge-score says 0
                        there even for an exact copy, so such documents stay out of the mean
    rouge_l_tokens      the same F-measure on token ids

Degeneration of a token sequence (the utility side: a model that stopped reproducing its training
text because it broke repeats itself):
    repeated_4grams     share of its 4-grams that already occurred earlier in it (seq-rep-4, Welleck
                        et al. 2020); None with fewer than 4 tokens
    longest_repeat      length of the longest run of tokens that occurs at least twice in it
                        (occurrences may overlap: "abab" has "ab"... and "aba" twice, so 3)
and over a set of sequences, ``distinct_n``: distinct n-grams / all n-grams (Li et al. 2016).

(n, p)-discoverable extraction (Hayes et al. 2024): a document is (n, p)-discoverable when one of n
independent samples reproduces its suffix with probability >= p, i.e. 1 - (1 - p_exact)^n >= p,
where p_exact is the probability of one sample doing so (``goldfish.audit.sampling``).

Membership-inference scores are oriented so that higher means "more likely a member".
"""

from __future__ import annotations

import math
import zlib
from difflib import SequenceMatcher

import numpy as np
from rapidfuzz.distance import LCSseq

# Bytes of the lower-cased UTF-8 text that are not ASCII [a-z0-9] become spaces. A non-ASCII
# character is all bytes >= 0x80, so this equals rouge-score's re.sub("[^a-z0-9]+", " ") + split,
# at C speed. ASCII text skips str.lower(): the table itself maps A-Z to a-z. (Non-ASCII text must
# go through str.lower(), which turns e.g. the Kelvin sign into an ASCII "k".)
_ALNUM_ONLY = bytes(c if chr(c).isascii() and (chr(c).isdigit() or chr(c).islower()) else 32 for c in range(256))
_ALNUM_LOWER = bytes(_ALNUM_ONLY[ord(chr(c).lower())] if chr(c).isascii() else 32 for c in range(256))


def rouge_tokens(text: str) -> list[bytes]:
    """rouge-score's default tokenizer (no stemmer): lowercase, runs of [a-z0-9] (as bytes)."""
    if text.isascii():
        return text.encode("ascii").translate(_ALNUM_LOWER).split()
    return text.lower().encode("utf-8").translate(_ALNUM_ONLY).split()


def rouge_l_f(prediction, target) -> float:
    """Rouge-L F-measure of two token sequences (0.0 when either is empty), LCS by rapidfuzz."""
    if not prediction or not target:
        return 0.0
    lcs = LCSseq.similarity(prediction, target)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(prediction), lcs / len(target)
    return 2 * precision * recall / (precision + recall)


def rouge_l(prediction: str, target: str) -> float:
    """Text Rouge-L F-measure, as ``rouge_scorer.RougeScorer(["rougeL"]).score(target, prediction)``."""
    return rouge_l_f(rouge_tokens(prediction), rouge_tokens(target))


def longest_run(generated: list[int], true: list[int]) -> int:
    """Length of the longest common contiguous run (substring) of two id sequences."""
    if not generated or not true:
        return 0
    # difflib's longest-match search; autojunk off so frequent tokens are never skipped
    return SequenceMatcher(None, generated, true, autojunk=False).find_longest_match(0, len(generated), 0, len(true)).size


MIN_RUN = 5  # reproduced runs the report marks: 5+ tokens (an unrelated control model's longest run is ~2-4)


def reproduced_runs(generated: list[int], true: list[int], min_len: int = MIN_RUN) -> tuple[list[list[int]], list[list[int]]]:
    """([start, end) token spans of ``generated``, the same of ``true``) covered by a common
    contiguous run of at least ``min_len`` tokens, wherever it stands in the other sequence; spans
    sorted, merged where they overlap or touch. ([], []) when there is none."""
    in_gen, in_true = set(), set()
    prev = [0] * (len(true) + 1)
    for i, g in enumerate(generated, 1):
        cur = [0] * (len(true) + 1)
        for j, t in enumerate(true, 1):
            if g == t:
                cur[j] = run = prev[j - 1] + 1
                if run >= min_len:  # mark the run's newest token, and its first min_len - 1 once it is long enough
                    back = min_len if run == min_len else 1
                    in_gen.update(range(i - back, i))
                    in_true.update(range(j - back, j))
        prev = cur
    return _spans(in_gen), _spans(in_true)


def _spans(positions: set[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for p in sorted(positions):
        if out and out[-1][1] == p:
            out[-1][1] = p + 1
        else:
            out.append([p, p + 1])
    return out


def extraction_metrics(generated: list[int], true: list[int], generated_text: str, true_text: str) -> dict:
    """All per-document extraction metrics (see module docstring)."""
    n = len(true)
    equal = [g == t for g, t in zip(generated, true)]
    first = next((i for i, e in enumerate(equal) if not e), min(len(generated), n))
    return {
        "exact_match": len(generated) == n and all(equal),
        "token_match_rate": sum(equal) / n if n else 0.0,
        "first_divergence": first,
        "longest_run": longest_run(generated, true),
        "rouge_l": rouge_l(generated_text, true_text) if rouge_tokens(true_text) else None,
        "rouge_l_tokens": rouge_l_f(generated, true),
    }


def log1mexp(x: float) -> float:
    """log(1 - e^x) for x <= 0, accurate at both ends (Maechler 2012): 0 at x = -inf, -inf at x = 0."""
    if x == -math.inf:
        return 0.0
    if x >= 0:  # p_exact = 1 (rounding may leave a sum of log-probs a hair above 0)
        return -math.inf
    return math.log(-math.expm1(x)) if x > -math.log(2) else math.log1p(-math.exp(x))


def discoverable(log_p_exact: float, n: int, p: float) -> bool:
    """Whether 1 - (1 - p_exact)^n >= p, from the natural log of p_exact, in log space:
    n * log(1 - p_exact) <= log(1 - p) (exact for p_exact far below 1/n and for p_exact = 1 or 0)."""
    return n * log1mexp(log_p_exact) <= math.log1p(-p)


def repeated_ngram_share(ids: list[int], n: int = 4) -> float | None:
    """Share of the n-grams of ``ids`` equal to an n-gram that starts earlier in ``ids`` (None: no n-gram)."""
    grams = [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]
    if not grams:
        return None
    seen, repeats = set(), 0
    for g in grams:
        repeats += g in seen
        seen.add(g)
    return repeats / len(grams)


def longest_repeat(ids: list[int]) -> int:
    """Length of the longest run of tokens that occurs at least twice in ``ids`` (overlaps allowed; 0 if none)."""
    a = np.asarray(ids)
    best = 0
    for shift in range(1, len(a)):  # a run at i equal to the run at i + shift, for the shift that makes it longest
        equal = np.r_[False, a[:-shift] == a[shift:], False].astype(np.int8)
        edges = np.flatnonzero(np.diff(equal))
        if len(edges):
            best = max(best, int((edges[1::2] - edges[::2]).max()))
    return best


def degeneration_metrics(ids: list[int]) -> dict:
    """The degeneration of one sequence (module docstring)."""
    return {"repeated_4grams": repeated_ngram_share(ids, 4), "longest_repeat": longest_repeat(ids)}


def distinct_n(sequences: list[list[int]], n: int = 2) -> float | None:
    """Distinct n-grams over all n-grams of ``sequences`` (None: no n-gram)."""
    grams = [tuple(s[i : i + n]) for s in sequences for i in range(len(s) - n + 1)]
    return len(set(grams)) / len(grams) if grams else None


def mia_scores(token_logprobs: np.ndarray, mu: np.ndarray, sigma: np.ndarray, text: str, k: float = 0.2) -> dict:
    """Membership scores of one document from its per-token log-probs (higher = more likely member).

    token_logprobs[i]: log p(x_i | x_<i) for each predicted token; mu, sigma: mean and std of
    log p(z | x_<i) under the model's own distribution (for min-k%++).
        loss        -mean NLL
        zlib        -(mean NLL / zlib-compressed byte length of the text)   (the paper code's ratio)
        min_k       mean of the lowest k share of token log-probs (Min-K% Prob)
        min_k_pp    mean of the lowest k share of (log p - mu) / sigma (Min-K%++)
    """
    nll = -float(np.mean(token_logprobs))
    n_low = max(1, math.ceil(k * len(token_logprobs)))
    normed = (token_logprobs - mu) / np.maximum(sigma, 1e-6)
    return {
        "loss": -nll,
        "zlib": -nll / len(zlib.compress(text.encode("utf-8"))),
        "min_k": float(np.mean(np.sort(token_logprobs)[:n_low])),
        "min_k_pp": float(np.mean(np.sort(normed)[:n_low])),
        "nll": nll,
    }


def rank_auc(member_scores, non_member_scores) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count half): the probability that a member outscores
    a non-member. Equal to scikit-learn's ``roc_auc_score`` (tested), and cheap enough to bootstrap."""
    from scipy.stats import rankdata

    m, n = np.asarray(member_scores, dtype=np.float64), np.asarray(non_member_scores, dtype=np.float64)
    ranks = rankdata(np.r_[m, n])[: len(m)]
    return float((ranks.sum() - len(m) * (len(m) + 1) / 2) / (len(m) * len(n)))


def tpr_at_fpr(member_scores, non_member_scores, fpr: float) -> float:
    """The largest TPR over thresholds t ("member" iff score >= t) whose FPR is at most ``fpr``: with
    k = floor(fpr * #non-members) and s the (k+1)-th largest non-member score, the share of members
    scoring above s (1.0 when k >= #non-members). The same as reading scikit-learn's ``roc_curve`` at
    FPR <= ``fpr`` (tested), in O(n): cheap enough to bootstrap."""
    m, n = np.asarray(member_scores, dtype=np.float64), np.asarray(non_member_scores, dtype=np.float64)
    k = false_positives_allowed(fpr, len(n))
    if k >= len(n):
        return 1.0
    s = np.partition(n, len(n) - k - 1)[len(n) - k - 1]
    return float(np.mean(m > s))


def false_positives_allowed(fpr: float, n_non: int) -> int:
    """floor(fpr * n_non): the most non-members a threshold may pass at FPR <= ``fpr``."""
    return math.floor(fpr * n_non)


FPRS = (0.001, 0.01)  # the FPRs whose TPR roc_summary reports
MIN_TAIL = 10  # a TPR at FPR f gets an interval from MIN_TAIL / f non-members on (its threshold then passes MIN_TAIL)


def fpr_label(fpr: float) -> str:
    """"0.1%", "1%": the FPR as the summary's keys spell it."""
    return f"{fpr:.1%}".replace(".0%", "%")


def roc_summary(member_scores, non_member_scores) -> dict:
    """ROC AUC with its bootstrap interval (``auc_ci``) and, for each f in FPRS, the TPR at FPR f
    (``tpr_at_0.1%_fpr``, ``tpr_at_1%_fpr``: ``tpr_at_fpr``), higher scores meaning member.

    A TPR at an FPR below 1 / #non-members is not resolvable (the first false positive already
    exceeds it): None, with ``min_fpr`` = 1 / #non-members. Its bootstrap interval (``tpr_at_1%_fpr_ci``
    ...; members and non-members resampled apart, ``goldfish.stats``) needs at least MIN_TAIL / f
    non-members (``tpr_ci_min_non_members``; 1,000 at 1% FPR), so that the threshold rests on at least
    MIN_TAIL non-members above it; None below."""
    from sklearn.metrics import roc_auc_score

    from goldfish.stats import two_sample_ci

    y = np.r_[np.ones(len(member_scores)), np.zeros(len(non_member_scores))]
    s = np.r_[member_scores, non_member_scores]
    n_non = len(non_member_scores)
    _, low, high = two_sample_ci(rank_auc, member_scores, non_member_scores)
    out = {"auc": float(roc_auc_score(y, s)), "auc_ci": [low, high], "min_fpr": 1 / n_non,
           "tpr_ci_min_non_members": {fpr_label(f): round(MIN_TAIL / f) for f in FPRS}}
    for f in FPRS:
        key = f"tpr_at_{fpr_label(f)}_fpr"
        out[key] = tpr_at_fpr(member_scores, non_member_scores, f) if false_positives_allowed(f, n_non) >= 1 else None
        out[f"{key}_ci"] = (list(two_sample_ci(lambda a, b: tpr_at_fpr(a, b, f), member_scores, non_member_scores)[1:])
                            if n_non >= round(MIN_TAIL / f) else None)
    return out
