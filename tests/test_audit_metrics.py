import random

import numpy as np
import pytest
from rouge_score import rouge_scorer

from goldfish.audit.metrics import extraction_metrics, longest_run, mia_scores, roc_summary, rouge_l, rouge_l_f
from goldfish.embedded.corpus import corpus_part


def _perturb(rng, words):
    out = list(words)
    for _ in range(rng.randrange(0, 12)):
        op = rng.randrange(3)
        if op == 0 and out:
            out.pop(rng.randrange(len(out)))
        elif op == 1:
            out.insert(rng.randrange(len(out) + 1), rng.choice(["the", "Foo", "x2", "é", "--", "DATA", "42"]))
        elif out:
            i, j = rng.randrange(len(out)), rng.randrange(len(out))
            out[i], out[j] = out[j], out[i]
    return " ".join(out)


def test_text_rouge_l_equals_rouge_score_on_hundreds_of_pairs():
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    rng = random.Random(0)
    texts = [d["text"] for d in corpus_part("targets")] + [d["text"] for d in corpus_part("validation")]
    pairs = []
    for _ in range(400):
        t = rng.choice(texts)
        start = rng.randrange(max(1, len(t) - 400))
        target = t[start : start + rng.randrange(0, 400)]
        pred = _perturb(rng, target.split()) if rng.random() < 0.7 else rng.choice(texts)[:300]
        pairs.append((pred, target))
    pairs += [("", "abc"), ("abc", ""), ("!!!", "..."), ("Ünïcödé ÀBC", "abc"), ("same text", "same text"),
              ("\u212aelvin \u0130stanbul", "kelvin istanbul"), ("MiXeD CaSe_42", "mixed case 42")]
    for pred, target in pairs:
        assert rouge_l(pred, target) == scorer.score(target, pred)["rougeL"].fmeasure, (pred, target)


def _slow_longest_common_substring(a, b):
    best = 0
    for i in range(len(a)):
        for j in range(len(b)):
            n = 0
            while i + n < len(a) and j + n < len(b) and a[i + n] == b[j + n]:
                n += 1
            best = max(best, n)
    return best


def test_longest_run_equals_slow_reference_on_random_pairs():
    rng = random.Random(1)
    for _ in range(300):
        n = rng.randrange(0, 60)
        true = [rng.randrange(8) for _ in range(n)]
        gen = list(true)
        for _ in range(rng.randrange(0, 8)):
            if gen:
                gen[rng.randrange(len(gen))] = rng.randrange(8)
        if rng.random() < 0.3:
            gen = gen[rng.randrange(len(gen) + 1):] + [rng.randrange(8) for _ in range(5)]
        assert longest_run(gen, true) == _slow_longest_common_substring(gen, true)


def test_extraction_metrics_on_a_small_example():
    m = extraction_metrics([1, 2, 3, 9, 5, 6, 7], [1, 2, 3, 4, 5, 6, 7], "a b c x e f g", "a b c d e f g")
    assert m["exact_match"] is False and m["first_divergence"] == 3 and m["longest_run"] == 3
    assert m["token_match_rate"] == 6 / 7 and m["rouge_l_tokens"] == pytest.approx(6 / 7)
    assert extraction_metrics([4, 5], [4, 5], "x", "x")["exact_match"] is True
    assert rouge_l_f([], [1]) == 0.0


def test_roc_summary_on_a_fixture():
    members = [0.9, 0.8, 0.7, 0.3]
    non = [0.6, 0.2, 0.1, 0.05, 0.4]
    got = roc_summary(members, non)
    wins = sum((m > n) + 0.5 * (m == n) for m in members for n in non)
    assert got["auc"] == pytest.approx(wins / (len(members) * len(non)))
    assert got["tpr_at_1%_fpr"] is None and got["min_fpr"] == 0.2  # 5 non-members cannot resolve a 1% FPR
    low, high = got["auc_ci"]
    assert low <= got["auc"] <= high and roc_summary(members, non)["auc_ci"] == [low, high]  # seeded: the same each call
    many = np.r_[non, np.linspace(-1, 0, 95)]  # 100 non-members: one false positive is 1%
    resolved = roc_summary(members, many)
    assert resolved["tpr_at_1%_fpr"] == 0.75 and resolved["tpr_at_0.1%_fpr"] is None  # above all but 0.6: 0.9, 0.8, 0.7
    assert roc_summary([1.0, 2.0], [0.0])["auc"] == 1.0


def test_rank_auc_equals_scikit_learn():
    from sklearn.metrics import roc_auc_score

    from goldfish.audit.metrics import rank_auc

    rng = np.random.default_rng(0)
    for _ in range(50):
        m, n = rng.integers(0, 5, rng.integers(1, 20)).astype(float), rng.integers(0, 5, rng.integers(1, 20)).astype(float)
        assert rank_auc(m, n) == pytest.approx(roc_auc_score(np.r_[np.ones(len(m)), np.zeros(len(n))], np.r_[m, n]))


def test_mia_scores_orientation_and_min_k():
    lp = np.log(np.array([0.5, 0.25, 0.9, 0.01, 0.6]))
    s = mia_scores(lp, np.zeros(5), np.ones(5), "text", k=0.2)
    assert s["loss"] == pytest.approx(np.mean(lp)) and s["min_k"] == pytest.approx(np.log(0.01))
    assert s["nll"] == pytest.approx(-np.mean(lp)) and s["zlib"] < 0


def test_degeneration_metrics_against_slow_definitions():
    import random

    from goldfish.audit.metrics import distinct_n, longest_repeat, repeated_ngram_share

    def slow_longest(ids):  # every pair of start positions, every length
        return max([k for i in range(len(ids)) for j in range(i + 1, len(ids)) for k in range(1, len(ids) - j + 1)
                    if ids[i : i + k] == ids[j : j + k]], default=0)

    rng = random.Random(0)
    for _ in range(200):
        ids = [rng.randrange(4) for _ in range(rng.randrange(0, 30))]
        assert longest_repeat(ids) == slow_longest(ids)
        grams = [tuple(ids[i : i + 4]) for i in range(len(ids) - 3)]
        expected = sum(g in grams[:i] for i, g in enumerate(grams)) / len(grams) if grams else None
        assert repeated_ngram_share(ids) == expected
    assert longest_repeat([1, 2, 1, 2, 1]) == 3 and longest_repeat([1, 2, 3]) == 0
    assert repeated_ngram_share([5, 5, 5, 5, 5, 5]) == 2 / 3 and repeated_ngram_share([1, 2]) is None
    assert distinct_n([[1, 2, 3], [1, 2, 4]]) == 3 / 4 and distinct_n([[1]]) is None


def test_reproduced_runs_marks_every_long_common_run_in_both_sequences():
    from goldfish.audit.metrics import reproduced_runs

    true = list(range(100, 130))
    # the first 6 true tokens, 3 others, true[12:20] (8 tokens) far later, a 4-token run (too short), true[0:6] again
    generated = true[:6] + [1, 2, 3] + true[12:20] + [4] + true[25:29] + [5] + true[:6]
    gen, tru = reproduced_runs(generated, true, min_len=5)
    assert gen == [[0, 6], [9, 17], [23, 29]] and tru == [[0, 6], [12, 20]]
    assert reproduced_runs(generated, true, min_len=9) == ([], [])
    assert reproduced_runs([], true) == ([], []) and reproduced_runs(true, true) == ([[0, 30]], [[0, 30]])


def _slow_tpr_at_fpr(members, non, fpr):
    """Every threshold t in the scores (and +inf): "member" iff score >= t; the largest TPR whose FPR <= fpr."""
    best = 0.0
    for t in sorted(set(members) | set(non)) + [float("inf")]:
        if sum(n >= t for n in non) / len(non) <= fpr:
            best = max(best, sum(m >= t for m in members) / len(members))
    return best


def test_tpr_at_fpr_equals_a_threshold_loop_and_scikit_learn():
    from sklearn.metrics import roc_curve

    from goldfish.audit.metrics import tpr_at_fpr

    rng = np.random.default_rng(3)
    for trial in range(30):
        n_m, n_n = rng.integers(1, 40), rng.integers(1, 400)
        members = np.round(rng.normal(0.5, 1, n_m), 1).tolist()  # rounded: ties within and across the groups
        non = np.round(rng.normal(0, 1, n_n), 1).tolist()
        fpr, tpr, _ = roc_curve(np.r_[np.ones(n_m), np.zeros(n_n)], np.r_[members, non])
        for f in (0.001, 0.01, 0.05, 0.3, 1.0):
            got = tpr_at_fpr(members, non, f)
            assert got == pytest.approx(_slow_tpr_at_fpr(members, non, f)), (trial, f)
            assert got == pytest.approx(tpr[fpr <= f].max(initial=0.0)), (trial, f)


def test_tpr_intervals_only_when_resolvable_and_close_to_an_independent_bootstrap():
    """The interval needs FPR x non-members >= 10; where given, it agrees with a slow bootstrap of
    another generator (4000 resamples: Monte-Carlo error ~0.01) within 0.03."""
    import random

    from goldfish.audit.metrics import tpr_at_fpr

    rng = np.random.default_rng(0)
    members, non = rng.normal(1.5, 1, 300), rng.normal(0, 1, 1500)
    got = roc_summary(members, non)
    assert got["tpr_at_0.1%_fpr_ci"] is None and got["tpr_at_0.1%_fpr"] is not None  # 1.5 false positives: a point, no interval
    assert got["tpr_ci_min_non_members"] == {"0.1%": 10000, "1%": 1000}
    low, high = got["tpr_at_1%_fpr_ci"]
    assert low < got["tpr_at_1%_fpr"] < high and roc_summary(members, non)["tpr_at_1%_fpr_ci"] == [low, high]  # seeded
    draw, stats = random.Random(1), []
    for _ in range(4000):
        m = [members[draw.randrange(len(members))] for _ in members]
        n = [non[draw.randrange(len(non))] for _ in non]
        stats.append(tpr_at_fpr(m, n, 0.01))
    ref = np.percentile(stats, [2.5, 97.5])
    assert abs(low - ref[0]) < 0.03 and abs(high - ref[1]) < 0.03, (low, high, ref)
    assert roc_summary(members, non[:999])["tpr_at_1%_fpr_ci"] is None  # 9.99 false positives: no interval


def test_ngram_overlap_equals_a_tuple_set_and_near_duplicates_follow_the_align_rule():
    from goldfish.audit.overlap import near_duplicates, ngram_overlaps

    rng = np.random.default_rng(5)
    training = [rng.integers(0, 50, n).tolist() for n in (40, 60, 13, 5)]
    copy = training[1][10:50]
    held = [copy, copy[:20] + rng.integers(50, 99, 20).tolist(), rng.integers(0, 50, 30).tolist(), training[0][:12], []]
    grams = {tuple(t[i : i + 13]) for t in training for i in range(len(t) - 12)}
    want = [sum(tuple(h[i : i + 13]) in grams for i in range(len(h) - 12)) / (len(h) - 12) if len(h) >= 13 else None for h in held]
    assert ngram_overlaps(held, training) == pytest.approx(want) and want[0] == 1.0 and want[3] is None
    edited = list(training[1])
    edited[30], edited[31] = 99, 98  # two tokens changed of 60: LCS similarity 58/60
    unrelated = rng.integers(100, 200, 40).tolist()
    half = training[1][:20] + unrelated  # LCS 20 of 60 and 60: similarity 2 * 20 / 120 < 0.6
    assert near_duplicates([edited, unrelated, training[1][:15], half, training[1] + unrelated], training) == [
        True, False, False, False, True]  # under 16 targets never; the last: 2 * 60 / 160 = 0.75
    assert near_duplicates([edited], []) == [False] and near_duplicates([], training) == []
