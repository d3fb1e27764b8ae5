import numpy as np
import pytest
import torch
from reference import ref_hash_mask, ref_paper_table_mask

from goldfish import GoldfishConfig, apply_goldfish, goldfish_mask
from goldfish.mask import PAPER_TABLE_SIZE, paper_table

HASH = GoldfishConfig()


def _rand_ids(n, vocab=50_000, seed=0):
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("k,h,seed", [(4, 13, 0), (2, 1, 7), (3.5, 5, 99), (8, 50, 2**32 - 1)])
def test_hash_equals_reference_random_ids(k, h, seed):
    cfg = GoldfishConfig(k=k, h=h, seed=seed)
    ids = _rand_ids(300, vocab=2**32, seed=seed % 1000).tolist()
    assert goldfish_mask(torch.tensor(ids), cfg).tolist() == ref_hash_mask(ids, k, h, seed)


def test_hash_equals_reference_real_text_with_boundaries(target_ids):
    ids = [t for doc in target_ids[:6] for t in doc[:120]]
    doc = [i for i, d in enumerate(target_ids[:6]) for _ in d[:120]]
    want = ref_hash_mask(ids, 4, 13, 0, doc_ids=doc)
    assert goldfish_mask(torch.tensor(ids), HASH, doc_ids=torch.tensor(doc)).tolist() == want
    position_ids = torch.tensor([p for d in target_ids[:6] for p in range(len(d[:120]))])
    assert goldfish_mask(torch.tensor(ids), HASH, position_ids=position_ids).tolist() == want
    cu = np.cumsum([0] + [len(d[:120]) for d in target_ids[:6]])
    assert goldfish_mask(torch.tensor(ids), HASH, cu_seqlens=cu).tolist() == want


@pytest.mark.parametrize("strategy", ["hash", "static"])
def test_numpy_equals_torch(strategy):
    cfg = GoldfishConfig(strategy=strategy, k=3)
    ids = torch.randint(0, 60_000, (4, 257))
    pos = torch.arange(257).remainder(61).expand(4, 257)
    labels = torch.where(torch.rand(4, 257) < 0.3, -100, ids)
    t = goldfish_mask(ids, cfg, position_ids=pos, labels=labels)
    n = goldfish_mask(ids.numpy(), cfg, position_ids=pos.numpy(), labels=labels.numpy())
    assert isinstance(n, np.ndarray) and n.dtype == bool
    assert np.array_equal(t.numpy(), n)


def test_duplicate_gets_the_same_mask_wherever_it_lands(target_ids):
    doc = torch.tensor(target_ids[0][:200])
    alone = goldfish_mask(doc, HASH)
    other, pad = torch.tensor(target_ids[1][:77]), 1
    # packed after another document, position_ids reset at the boundary
    packed = torch.cat([other, doc])
    pos = torch.cat([torch.arange(77), torch.arange(200)])
    assert torch.equal(goldfish_mask(packed, HASH, position_ids=pos)[77:], alone)
    # same, described by doc ids, in row 1 of a batch
    batch = torch.stack([torch.cat([doc, other]), packed])
    docs = torch.tensor([[0] * 200 + [1] * 77, [0] * 77 + [1] * 200])
    m = goldfish_mask(batch, HASH, doc_ids=docs)
    assert torch.equal(m[0, :200], alone) and torch.equal(m[1, 77:], alone)
    # left and right padding, boundaries from the attention mask
    left = torch.cat([torch.full((23,), pad), doc]).unsqueeze(0)
    right = torch.cat([doc, torch.full((23,), pad)]).unsqueeze(0)
    attn_left = (torch.arange(223) >= 23).long().unsqueeze(0)
    attn_right = (torch.arange(223) < 200).long().unsqueeze(0)
    assert torch.equal(goldfish_mask(left, HASH, attention_mask=attn_left)[0, 23:], alone)
    assert torch.equal(goldfish_mask(right, HASH, attention_mask=attn_right)[0, :200], alone)
    # HF left-padded position ids (pads get 1, the document counts from 0)
    pos_left = torch.cat([torch.ones(23, dtype=torch.long), torch.arange(200)]).unsqueeze(0)
    assert torch.equal(goldfish_mask(left, HASH, position_ids=pos_left)[0, 23:], alone)


@pytest.mark.parametrize("k", [2, 3, 4, 8])
def test_drop_rate_on_the_embedded_corpus(target_ids, k):
    cfg = GoldfishConfig(k=k)
    drops = [goldfish_mask(torch.tensor(d), cfg) for d in target_ids]
    rate = torch.cat(drops).float().mean().item()
    assert abs(rate - 1 / k) < 0.015, rate


def test_first_h_tokens_are_not_exempt(target_ids):
    rng = torch.Generator().manual_seed(3)
    docs = [torch.tensor(d) for d in target_ids] + [torch.randint(0, 8000, (20,), generator=rng) for _ in range(3000)]
    head = torch.stack([goldfish_mask(d, HASH)[1:13] for d in docs])
    assert abs(head.float().mean().item() - 0.25) < 0.015


def _flip_rate(cfg, transform, n=20_000):
    """How often transforming the h-token context of a target changes its drop decision."""
    g = torch.Generator().manual_seed(11)
    flips = 0
    for _ in range(n // 500):
        window = torch.randint(0, 50_000, (500, cfg.h + 1), generator=g)
        changed = torch.cat([transform(window[:, :-1]), window[:, -1:]], dim=1)
        before = goldfish_mask(window, cfg)[:, -1]
        after = goldfish_mask(changed, cfg)[:, -1]
        flips += (before != after).sum().item()
    return flips / n


def test_hash_is_order_sensitive_and_paper_table_is_not():
    expected = 2 * 0.25 * 0.75  # two independent 1-in-4 decisions disagree this often
    hash_rev = _flip_rate(HASH, lambda w: w.flip(1))
    hash_perm = _flip_rate(HASH, lambda w: w[:, torch.randperm(w.shape[1], generator=torch.Generator().manual_seed(0))])
    assert abs(hash_rev - expected) < 0.02 and abs(hash_perm - expected) < 0.02
    # paper-table: the window (the target and the h-1 ids before it) is a product, so order is lost
    table = GoldfishConfig(strategy="paper-table")
    assert _flip_rate(table, lambda w: torch.cat([w[:, :1], w[:, 1:].flip(1)], dim=1)) == 0.0


def test_paper_table_rule_by_hand():
    cfg = GoldfishConfig(strategy="paper-table", k=4, h=4)
    ids = torch.tensor([5, 0, 17, 3, 999_999, 12, 7, 1_000_003 + 8, 44])
    want = ref_paper_table_mask(ids.tolist(), 4, 4, paper_table().tolist())
    assert goldfish_mask(ids, cfg).tolist() == want
    assert goldfish_mask(ids.numpy(), cfg).tolist() == want
    m = goldfish_mask(ids, cfg)
    assert m[3] == m[4] == (paper_table()[0] < 0.25)  # a 0 in the window zeroes the product: one entry


def _official_paper_rule(targets: torch.Tensor, k: float, h: int) -> torch.Tensor:
    """The official code's rule re-run on CPU: int64 product of each h-window (wrapping), % table size."""
    table = torch.rand(PAPER_TABLE_SIZE, generator=torch.Generator().manual_seed(2971215073))
    key = targets.unfold(1, h, 1).prod(-1) % PAPER_TABLE_SIZE
    drop = table[key] < 1 / k
    return torch.cat([torch.zeros(targets.shape[0], h - 1, dtype=torch.bool), drop], dim=1)


def _ids_with_zero_runs(vocab: int, shape, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, shape, generator=gen)
    for row in ids:
        start = int(torch.randint(0, shape[1] - 8, (1,), generator=gen))
        row[start : start + 5] = 0  # a run of id 0: the key collapses to 0 wherever it is in the window
    return ids


@pytest.mark.parametrize("vocab,h", [(32000, 13), (128256, 13), (151936, 50), (32000, 4), (152064, 4)])
def test_paper_table_equals_official_rule_bit_for_bit(vocab, h):
    ids = _ids_with_zero_runs(vocab, (4, 512), seed=vocab + h)
    cfg = GoldfishConfig(strategy="paper-table", k=4, h=h)
    official = _official_paper_rule(ids, 4, h)
    assert torch.equal(goldfish_mask(ids, cfg), official)
    assert (goldfish_mask(ids.numpy(), cfg) == official.numpy()).all()
    disagree = (official != _exact_product_rule(ids, 4, h)).float().mean()
    if vocab**h > 2**63:  # the int64 wrap is part of the rule: most such windows overflow
        assert disagree > 0.2
    else:
        assert disagree == 0


def _exact_product_rule(ids, k, h):
    """The product taken exactly mod 1,000,003 (what the rule is *not*)."""
    m = ids % PAPER_TABLE_SIZE
    key = torch.ones_like(m[:, h - 1 :])
    for d in range(h):
        key = key * m[:, d : m.shape[1] - h + 1 + d] % PAPER_TABLE_SIZE
    drop = paper_table()[key] < 1 / k
    return torch.cat([torch.zeros(ids.shape[0], h - 1, dtype=torch.bool), drop], dim=1)


@pytest.mark.parametrize("h", [4, 13, 50])
def test_paper_table_against_slow_reference_packed_row(h):
    """A (1, T) packed row (one document, no boundaries given), checked against tests/reference.py."""
    ids = _ids_with_zero_runs(151936, (1, 300), seed=h)
    want = ref_paper_table_mask(ids[0].tolist(), 4, h, paper_table().tolist())
    assert goldfish_mask(ids, GoldfishConfig(strategy="paper-table", k=4, h=h))[0].tolist() == want


def test_static_drops_every_kth_supervised_target():
    cfg = GoldfishConfig(strategy="static", k=3)
    ids = torch.arange(12) + 5
    labels = torch.tensor([-100, -100, 1, 1, 1, -100, 1, 1, 1, 1, 1, 1])
    got = goldfish_mask(ids, cfg, labels=labels, doc_ids=torch.tensor([0] * 8 + [1] * 4))
    # doc 0 supervises 2, 3, 4, 6, 7 (its 3rd is 4, it has no 6th); doc 1 supervises 8..11 (3rd: 10)
    assert [i for i in range(12) if got[i]] == [4, 10]


def test_random_is_fresh_every_call_so_duplicates_differ():
    cfg = GoldfishConfig(strategy="random")
    ids = _rand_ids(4000)
    g = torch.Generator().manual_seed(0)
    a, b = goldfish_mask(ids, cfg, generator=g), goldfish_mask(ids, cfg, generator=g)
    assert abs(a.float().mean() - 0.25) < 0.03 and not torch.equal(a, b)
    assert torch.equal(goldfish_mask(ids, HASH), goldfish_mask(ids, HASH))


def test_token_k_overrides_and_opts_out():
    ids = _rand_ids(4000).unsqueeze(0)
    token_k = torch.full(ids.shape, 8.0)
    token_k[0, :2000] = float("inf")
    m = goldfish_mask(ids, HASH, token_k=token_k)
    assert not m[0, :2000].any()
    assert abs(m[0, 2000:].float().mean().item() - 1 / 8) < 0.02
    assert torch.equal(m[0, 2000:], goldfish_mask(ids, GoldfishConfig(k=8))[0, 2000:])


def test_apply_goldfish_keeps_ignored_labels_and_reads_prompt_ids():
    ids = _rand_ids(500).unsqueeze(0)
    labels = ids.clone()
    labels[0, :200] = -100
    out = apply_goldfish(labels, ids, HASH)
    assert (out[0, :200] == -100).all()
    drop = goldfish_mask(ids, HASH)
    assert torch.equal(out[0, 200:] == -100, drop[0, 200:])
    assert torch.equal(labels[0, 200:][~drop[0, 200:]], out[0, 200:][~drop[0, 200:]])
    assert np.array_equal(apply_goldfish(labels.numpy(), ids.numpy(), HASH), out.numpy())


def test_none_strategy_drops_nothing():
    assert not goldfish_mask(_rand_ids(100), GoldfishConfig(strategy="none")).any()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"k": 1}, "k must be a finite number >= 2"),
        ({"k": float("nan")}, "k must be a finite number >= 2"),
        ({"k": float("inf")}, "k must be a finite number >= 2"),
        ({"h": 0}, "h .* integer >= 1"),
        ({"strategy": "hashh"}, "unknown goldfish strategy 'hashh'"),
        ({"seed": -1}, "seed must be an integer"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GoldfishConfig(**kwargs)


def test_bad_inputs():
    with pytest.raises(ValueError, match="integer token ids"):
        goldfish_mask(torch.rand(3, 4), HASH)
    with pytest.raises(ValueError, match=r"in \[0, 2\*\*32\), found -100"):
        goldfish_mask(torch.tensor([1, -100, 3]), HASH)
    with pytest.raises(ValueError, match="position_ids has shape"):
        goldfish_mask(torch.ones(2, 5, dtype=torch.long), HASH, position_ids=torch.arange(5))
    with pytest.raises(ValueError, match="shape"):
        goldfish_mask(torch.ones(2, 2, 2, dtype=torch.long), HASH)
    with pytest.raises(ValueError, match="torch.Tensor or numpy.ndarray"):
        goldfish_mask([1, 2, 3], HASH)
    with pytest.raises(ValueError, match="labels has shape"):
        apply_goldfish(torch.ones(3, dtype=torch.long), torch.ones(4, dtype=torch.long), HASH)
