"""Memorization and membership-inference metrics.

Extraction metrics compare a generated suffix with the true one (token ids unless said otherwise):
    exact_match         the whole suffix is identical (the paper code's "memorized" document)
    token_match_rate    share of suffix positions i with generated[i] == true[i]
    first_divergence    index of the first position that differs (= suffix length if none)
    longest_run         longest contiguous run of true-suffix tokens reproduced exactly, anywhere in
                        the generation (longest common substring of the two id sequences)
    rouge_l             text Rouge-L F-measure, identical to google's rouge-score ``rougeL`` with its
                        default tokenizer (lowercase, runs of [a-z0-9] as tokens, no stemming);
                        None (undefined) when the true text has no such word: rouge-score says 0
                        there even for an exact copy, so such documents stay out of the mean
    rouge_l_tokens      the same F-measure on token ids

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


def roc_summary(member_scores, non_member_scores) -> dict:
    """ROC AUC and TPR at 0.1% and 1% FPR (scikit-learn); higher scores must mean member."""
    from sklearn.metrics import roc_auc_score, roc_curve

    y = np.r_[np.ones(len(member_scores)), np.zeros(len(non_member_scores))]
    s = np.r_[member_scores, non_member_scores]
    fpr, tpr, _ = roc_curve(y, s)
    return {
        "auc": float(roc_auc_score(y, s)),
        "tpr_at_0.1%_fpr": float(tpr[fpr <= 0.001].max(initial=0.0)),
        "tpr_at_1%_fpr": float(tpr[fpr <= 0.01].max(initial=0.0)),
    }
