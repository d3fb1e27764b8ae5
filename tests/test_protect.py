"""Protected spans (goldfish-protect-v1): exact values against the slow reference, the same drops for
a secret in any context and at either tokenization of its edge, and the marker from character spans."""

import numpy as np
import pytest
import torch

from goldfish.config import GoldfishConfig
from goldfish.mask import goldfish_mask
from goldfish.protect import protected_drops, token_marker
from reference import ref_hash_mask, ref_protect_mask


def _random_marker(rng, n, density=0.3):
    marker, span = np.zeros(n, np.int64), 0
    i = 0
    while i < n:
        if rng.random() < density / 4:
            length = int(rng.integers(1, 12))
            span += 1
            marker[i : i + length] = span
            i += length + int(rng.integers(0, 2))  # sometimes two spans touch
        else:
            i += 1
    return marker


@pytest.mark.parametrize("protect_k,h", [(2, 13), (3, 4), (1.5, 13), (1, 13), (8, 50)])
def test_protected_drops_equal_reference(protect_k, h):
    rng = np.random.default_rng(int(protect_k * 10) + h)
    ids = rng.integers(0, 150_000, size=(3, 400))
    markers = np.stack([_random_marker(rng, 400) for _ in range(3)])
    doc_ids = np.repeat(np.arange(12), 100).reshape(3, 400)  # document boundaries cut some runs
    cfg = GoldfishConfig(k=4, h=h, seed=7, protect_k=protect_k)
    got = goldfish_mask(torch.tensor(ids), cfg, doc_ids=torch.tensor(doc_ids), protected=torch.tensor(markers)).numpy()
    got_np = goldfish_mask(ids, cfg, doc_ids=doc_ids, protected=markers)
    for r in range(3):
        prot = ref_protect_mask(ids[r].tolist(), markers[r].tolist(), protect_k, h, 7, doc_ids[r].tolist())
        plain = ref_hash_mask(ids[r].tolist(), 4, h, 7, doc_ids[r].tolist())
        want = [p if m else q for p, q, m in zip(prot, plain, markers[r])]
        assert got[r].tolist() == want
        assert got_np[r].tolist() == want
    assert markers.any()


def test_every_protected_run_loses_a_token_and_rate_follows_protect_k():
    rng = np.random.default_rng(0)
    ids = torch.tensor(rng.integers(0, 50_000, size=(1, 60_000)))
    marker = torch.tensor(_random_marker(rng, 60_000, density=0.8)).unsqueeze(0)
    for protect_k in (1, 2, 4):
        drop = goldfish_mask(ids, GoldfishConfig(strategy="none", protect_k=protect_k), protected=marker)[0]
        inside = marker[0] != 0
        rate = drop[inside].float().mean().item()
        assert drop[~inside].sum() == 0  # "none" outside the spans
        if protect_k == 1:
            assert rate == 1.0
        else:  # 1/protect_k plus the at-least-one guarantee on short runs
            assert 1 / protect_k <= rate < 1 / protect_k + 0.12
        for span in marker[0].unique()[1:]:
            assert drop[marker[0] == span].any()


def _marked(tokenizer, text: str, secret: str):
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    start = text.index(secret)
    return enc["input_ids"], token_marker(enc["offset_mapping"], [(start, start + len(secret))])


def test_same_secret_same_interior_drops_in_any_context(tokenizer):
    """Five contexts, with and without a leading space: the secret's tokens after its first carry the
    identical drop pattern (the plain hash, for contrast, differs)."""
    secret = "Marisol Quintero, m.quintero@meridian-help.example, +1 (415) 555-0142"
    texts = [f"Please contact {secret} today.", f"Signed:\n{secret}", f"{secret} is who you want.",
             f"Questions about the refund? Write to {secret}.", f"x={secret}"]
    cfg = GoldfishConfig(k=4, protect_k=2)
    interiors, plain = [], []
    for text in texts:
        ids, marker = _marked(tokenizer, text, secret)
        drop = goldfish_mask(np.asarray(ids), cfg, protected=np.asarray(marker))
        inside = [i for i, m in enumerate(marker) if m]
        pieces = [ids[i] for i in inside]
        interiors.append((pieces[1:], drop[inside][1:].tolist()))
        plain.append(goldfish_mask(np.asarray(ids), cfg)[inside][1:].tolist())
    first_tokens = {tuple(p) for p, _ in interiors}
    assert len(first_tokens) == 1, "the secret's interior tokenizes the same everywhere"
    assert len({tuple(d) for _, d in interiors}) == 1
    assert any(interiors[0][1]) and not all(interiors[0][1])
    assert len({tuple(d) for d in plain}) > 1  # the ordinary hash differs from context to context


def test_edge_tokenization_differs_but_interior_does_not(tokenizer):
    secret = "Marisol Quintero"
    with_space, marker_a = _marked(tokenizer, f"ask {secret}", secret)
    at_start, marker_b = _marked(tokenizer, secret, secret)
    a = [t for t, m in zip(with_space, marker_a) if m]
    b = [t for t, m in zip(at_start, marker_b) if m]
    assert a[0] != b[0] and a[1:] == b[1:]
    cfg = GoldfishConfig(strategy="none", protect_k=2)
    da = goldfish_mask(np.asarray(with_space), cfg, protected=np.asarray(marker_a))[np.asarray(marker_a) != 0]
    db = goldfish_mask(np.asarray(at_start), cfg, protected=np.asarray(marker_b))[np.asarray(marker_b) != 0]
    assert da[1:].tolist() == db[1:].tolist()


def test_token_marker_from_offsets():
    offsets = [(0, 3), (3, 8), (8, 9), (9, 14), (0, 0), (14, 20)]
    assert token_marker(offsets, [(4, 6)]) == [0, 1, 0, 0, 0, 0]
    assert token_marker(offsets, [(9, 20), (0, 2)]) == [1, 0, 0, 2, 0, 2]  # the special token is never marked
    assert token_marker(offsets, [(4, 9), (8, 12)]) == [0, 1, 1, 1, 0, 0]  # overlapping spans merge
    assert token_marker(offsets, []) == [0] * 6


def test_protection_follows_the_documents_and_rows():
    ids = torch.arange(100, 140).reshape(2, 20)
    marker = torch.ones_like(ids)
    cfg = GoldfishConfig(protect_k=3)
    pos = torch.cat([torch.arange(10), torch.arange(10)]).expand(2, 20)
    whole = goldfish_mask(ids, cfg, protected=marker)
    split = goldfish_mask(ids, cfg, position_ids=pos, protected=marker)
    ref = [ref_protect_mask(r.tolist(), [1] * 20, 3, 13, 0, [0] * 10 + [1] * 10) for r in ids]
    assert split.tolist() == ref
    assert whole.tolist() == [ref_protect_mask(r.tolist(), [1] * 20, 3, 13, 0) for r in ids]


def test_protected_drops_on_numpy_and_torch_agree():
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 1000, size=(2, 64))
    marker = np.stack([_random_marker(rng, 64, 0.9) for _ in range(2)])
    starts = np.zeros_like(ids, dtype=bool)
    starts[:, 0] = True
    a = protected_drops(ids, marker, starts, 2, 13, 0)
    b = protected_drops(torch.tensor(ids), torch.tensor(marker), torch.tensor(starts), 2, 13, 0).numpy()
    assert isinstance(a, np.ndarray) and (a == b).all()


@pytest.mark.parametrize("bad", [0.5, 0, float("inf"), True])
def test_bad_protect_k(bad):
    with pytest.raises(ValueError, match="protect_k"):
        GoldfishConfig(protect_k=bad)


def test_vectors_pin_the_spec():
    import json
    from pathlib import Path

    from goldfish.protect import PROTECT_VERSION

    vectors = json.loads((Path(__file__).parent / "data" / "protect_vectors.json").read_text())
    assert vectors["version"] == PROTECT_VERSION
    for v in vectors["vectors"]:
        assert [int(x) for x in ref_protect_mask(v["ids"], v["marker"], v["protect_k"], v["h"], v["seed"])] == v["drop"]
        starts = np.zeros(len(v["ids"]), bool)
        starts[0] = True
        got = protected_drops(np.asarray(v["ids"], np.int64), np.asarray(v["marker"]), starts, v["protect_k"], v["h"], v["seed"])
        assert got.astype(int).tolist() == v["drop"]
