"""goldfish-align-v1 (goldfish.align, goldfish.data.near_duplicates): exact values against the slow
reference, the same drops on every aligned token of near-duplicates and template fills, hash-v1
kept for exact duplicates, and decisions that read the tokens only."""

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from reference import ref_aligned, ref_alignment

from goldfish.align import ALIGN_VERSION
from goldfish.config import GoldfishConfig
from goldfish.data.near_duplicates import aligned_dataset, aligned_examples
from goldfish.mask import goldfish_mask

CFG = GoldfishConfig(k=4, h=13, seed=7)
VECTORS = Path(__file__).parent / "data" / "align_vectors.json"


def _variant(rng: random.Random, base: list[int], edits: int) -> list[int]:
    out = list(base)
    for _ in range(edits):
        i = rng.randrange(len(out))
        op = rng.choice("isd")
        if op == "i":
            out.insert(i, rng.randrange(3, 400))
        elif op == "s":
            out[i] = rng.randrange(3, 400)
        elif len(out) > 17:
            del out[i]
    return out


def _corpus(seed: int) -> list[tuple[list[int], list[int]]]:
    """Chats as (ids, labels): a prompt (unsupervised) and one or two replies, most of them edited
    copies of a few base replies, some unrelated, some too short to be passages."""
    rng = random.Random(seed)
    bases = [[rng.randrange(3, 400) for _ in range(rng.randint(18, 40))] for _ in range(3)]
    out = []
    for _ in range(14):
        ids, labels = [], []
        for _ in range(rng.randint(1, 2)):
            prompt = [1] + [rng.randrange(3, 400) for _ in range(rng.randint(2, 9))] + [2]
            r = rng.random()
            reply = (rng.choice(bases) if r < 0.25 else _variant(rng, rng.choice(bases), rng.randint(1, 4)) if r < 0.8
                     else [rng.randrange(3, 400) for _ in range(rng.randint(5, 30))])
            ids += prompt + reply
            labels += [-100] * len(prompt) + reply
        out.append((ids, labels))
    return out


def _columns(corpus, cfg=CFG):
    aligned = aligned_examples([i for i, _ in corpus], [lab for _, lab in corpus], cfg.h, cfg.seed)
    return [aligned.column(n, len(ids)).tolist() for n, (ids, _) in enumerate(corpus)], aligned


@pytest.mark.parametrize("seed", range(4))
def test_fast_path_equals_the_reference(seed):
    corpus = _corpus(seed)
    got, aligned = _columns(corpus)
    assert got == ref_aligned(corpus, CFG.h, CFG.seed)
    assert aligned.clusters >= 1 and aligned.aligned_targets == sum(v >= 0 for row in got for v in row)


def test_vectors_pin_the_spec():
    vectors = json.loads(VECTORS.read_text())
    assert vectors["version"] == ALIGN_VERSION
    for v in vectors["vectors"]:
        corpus = [(e["ids"], e["labels"]) for e in v["examples"]]
        cfg = GoldfishConfig(h=v["h"], seed=v["seed"])
        assert ref_aligned(corpus, cfg.h, cfg.seed) == v["aligned"]
        assert _columns(corpus, cfg)[0] == v["aligned"]


def _chat(tokenizer, prompt: str, reply: str):
    from goldfish.data.tokenize import encode_document

    ids, labels, _ = encode_document({"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]},
                                     tokenizer)
    return ids, labels


def _reply_span(labels):
    sup = [i for i, lab in enumerate(labels) if lab != -100]
    return sup[0], sup[-1] + 1


@pytest.mark.parametrize("kind", ["slot fills", "near-duplicates"])
def test_every_aligned_token_drops_as_the_representative_does(kind):
    """The issue's property: 5 fills of a template (5 near-duplicate variants), each after its own
    prompt: every token aligned to the representative has the representative's decision there,
    while hash-v1 alone differs after the points where the copies differ."""
    from goldfish.embedded.tiny import load_embedded_tokenizer
    from goldfish.experiments.chat_data import REFUND_VARIANTS, TEMPLATE_REPLY

    tokenizer = load_embedded_tokenizer()
    if kind == "slot fills":
        fills = [("Ana", 40213), ("Bartholomew", 7), ("Li Wei", 993311), ("Ngozi", 58120), ("Marie-Claire", 100200)]
        replies = [TEMPLATE_REPLY.format(name=n, order=o) for n, o in fills]
    else:
        replies = REFUND_VARIANTS
    corpus = [_chat(tokenizer, f"Question number {i}: can you help me?", r) for i, r in enumerate(replies)]
    columns, aligned = _columns(corpus)
    assert aligned.clusters == 1 and aligned.passages == 5
    drops = [goldfish_mask(torch.tensor(ids), CFG, aligned=torch.tensor(col)).tolist() for (ids, _), col in zip(corpus, columns)]
    own = [goldfish_mask(torch.tensor(ids), CFG).tolist() for ids, _ in corpus]
    spans = [_reply_span(labels) for _, labels in corpus]
    rep = next(n for n, col in enumerate(columns) if all(v < 0 for v in col))
    ra, re = spans[rep]
    differs = 0
    for n, ((ids, _), (a, e)) in enumerate(zip(corpus, spans)):
        if n == rep:
            assert drops[n] == own[n]
            continue
        pairs = ref_alignment(corpus[rep][0][ra:re], ids[a:e])
        assert 10 * len(pairs) >= 3 * (e - a + re - ra) and all(columns[n][a + c] >= 0 for _, c in pairs)
        assert all(drops[n][a + c] == drops[rep][ra + s] for s, c in pairs)
        differs += sum(own[n][a + c] != own[rep][ra + s] for s, c in pairs)
    assert differs > 0  # hash-v1 alone does not give them the same drops


def test_exact_duplicates_keep_their_hash_v1_masks():
    """Copies of a document (same reply, same prompt) are masked as hash-v1 masks them, also when a
    near-duplicate of the reply elsewhere joins their cluster (the most copied passage represents it)."""
    rng = random.Random(3)
    prompt = [1, 17, 18, 2]
    replies = [[rng.randrange(3, 400) for _ in range(30)] for _ in range(2)]
    docs = [(prompt + r, [-100] * 4 + r) for r in replies]
    variant = _variant(rng, replies[0], 2)
    copies = [docs[0]] * 4 + [docs[1]] * 3 + [([1, 99, 2] + variant, [-100] * 3 + variant)]
    columns, aligned = _columns(copies)
    assert aligned.clusters == 2 and aligned.aligned_targets > 0
    for (ids, _), col in list(zip(copies, columns))[:-1]:
        ids = np.asarray(ids)
        assert (goldfish_mask(ids, CFG, aligned=np.asarray(col)) == goldfish_mask(ids, CFG)).all()


def test_decisions_read_the_tokens_only():
    """Example order and the number of processes change nothing."""
    corpus = _corpus(1)
    columns, _ = _columns(corpus)
    order = list(range(len(corpus)))
    random.Random(5).shuffle(order)
    shuffled, _ = _columns([corpus[i] for i in order])
    assert shuffled == [columns[i] for i in order]


def test_datasets_path_on_workers_equals_in_memory(tmp_path):
    from datasets import Dataset

    corpus = _corpus(2) * 40  # 560 examples: enough for the worker pool
    ds = Dataset.from_dict({"input_ids": [i for i, _ in corpus], "labels": [lab for _, lab in corpus]})
    want = aligned_examples([i for i, _ in corpus], [lab for _, lab in corpus], CFG.h, CFG.seed)
    for num_proc, name in ((None, "one.arrow"), (2, "two.arrow")):
        got = aligned_dataset(ds, CFG.h, CFG.seed, -100, num_proc, str(tmp_path / name))
        assert got.stats() == want.stats()
        assert all(got.column(n, len(ids)).tolist() == want.column(n, len(ids)).tolist() for n, (ids, _) in enumerate(corpus))


def test_aligned_hashes_need_the_hash_strategy():
    ids = np.arange(20)
    with pytest.raises(ValueError, match="strategy 'hash'"):
        goldfish_mask(ids, GoldfishConfig(strategy="static"), aligned=np.full(20, 5))
    assert not goldfish_mask(ids, GoldfishConfig(strategy="none"), aligned=np.full(20, -1)).any()


def test_a_candidate_passage_over_the_bound_is_refused_not_aligned(monkeypatch):
    """The alignment's memory grows with |p| * |r|: copies longer than the bound stop with a clear error;
    at the bound they are aligned as before."""
    import goldfish.data.near_duplicates as near

    rng = random.Random(3)
    base = [rng.randrange(3, 400) for _ in range(40)]
    corpus = [(base, base), (_variant(rng, base, 2), _variant(rng, base, 2))]
    corpus[1] = (corpus[1][0], list(corpus[1][0]))
    longest = max(len(ids) for ids, _ in corpus)
    monkeypatch.setattr(near, "MAX_ALIGNED_TOKENS", longest)
    assert _columns(corpus)[1].clusters == 1
    monkeypatch.setattr(near, "MAX_ALIGNED_TOKENS", longest - 1)
    with pytest.raises(ValueError, match=rf"--near-duplicates align: example \d has a near-duplicate passage of {longest} supervised "
                                         rf"tokens; the rule aligns passages of up to {longest - 1} "):
        _columns(corpus)
