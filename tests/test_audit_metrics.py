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
