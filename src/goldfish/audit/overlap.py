"""How held-out text overlaps the training text: per held-out probe (a ``--non-members`` or
``--utility-data`` document or chat turn), compared by its targets (``Probe.scored_ids[-n_scored:]``)
with the targets of every member (``--data``):

    ngram_overlap   the share of its 13-grams that occur among the members' 13-grams, counted with
                    repeats (MIMIR, Duan et al. 2024, which filters non-members at 0.8: such a
                    non-member measures duplication, not membership); None under 13 targets
    near_duplicate  goldfish-align-v1's near-duplicate rule (``goldfish.align``): the held-out
                    passage (its targets, at least MIN_TOKENS = 16 of them) lies in one component of
                    the rule's candidate graph (MinHash bands) over the members' passages and the
                    held-out ones with a member passage r it is similar to by the rule's cluster
                    threshold (2 LCS(p, r) / (|p| + |r|) >= 0.6); False under 16 targets

13-grams are compared by 64-bit hashes (two goldfish-hash-v1 context hashes of different seeds), so
the members' n-grams cost 8 bytes each; two distinct 13-grams share a hash with probability 2^-64.
"""

from __future__ import annotations

import numpy as np

NGRAM, OVERLAP_FLAG = 13, 0.8  # MIMIR's n and its filter: non-members at 13-gram overlap >= 0.8 are reported
_SEEDS = (0x4E47524D, 0x4F564C50)  # "NGRM", "OVLP": the two halves of an n-gram's 64-bit hash


def ngram_hashes(sequences: list[list[int]], n: int = NGRAM) -> list[np.ndarray]:
    """Per sequence, the uint64 hash of each of its n-grams, in order (len - n + 1 of them, or none)."""
    from goldfish.hashing import context_hashes

    if not sequences:
        return []
    lengths = np.asarray([len(s) for s in sequences], dtype=np.int64)
    # one flat row, a 0 after each sequence: the hash of position t's context is that of the n ids before t
    ids = np.concatenate([np.append(np.asarray(s, dtype=np.int64), 0) for s in sequences])
    pos = np.arange(len(ids)) - np.repeat(np.concatenate([[0], np.cumsum(lengths + 1)[:-1]]), lengths + 1)
    context = np.minimum(pos, n)
    high, low = (context_hashes(ids, context, n, seed).astype(np.uint64) for seed in _SEEDS)
    hashes = (high << np.uint64(32)) | low
    full = hashes[pos >= n]
    return np.split(full, np.cumsum(np.maximum(lengths - n + 1, 0))[:-1])


def ngram_overlaps(held_out: list[list[int]], training: list[list[int]], n: int = NGRAM) -> list[float | None]:
    """``ngram_overlap`` (module docstring) of each held-out sequence against the training sequences."""
    known = np.unique(np.concatenate(ngram_hashes(training, n) or [np.zeros(0, np.uint64)]))
    return [float(np.isin(h, known).mean()) if len(h) else None for h in ngram_hashes(held_out, n)]


def near_duplicates(held_out: list[list[int]], training: list[list[int]]) -> list[bool]:
    """``near_duplicate`` (module docstring) of each held-out sequence against the training sequences."""
    from rapidfuzz.distance import LCSseq

    from goldfish.align import MIN_TOKENS, signatures, similar
    from goldfish.data.near_duplicates import components

    train = sorted({tuple(t) for t in training if len(t) >= MIN_TOKENS})  # copies decide alike: one each
    held = [i for i, h in enumerate(held_out) if len(h) >= MIN_TOKENS]
    out = [False] * len(held_out)
    if not train or not held:
        return out
    for comp in components(signatures([list(t) for t in train] + [held_out[i] for i in held])):
        members = [train[c] for c in comp if c < len(train)]
        for c in comp[comp >= len(train)]:
            p = held_out[held[c - len(train)]]
            out[held[c - len(train)]] = any(similar(int(LCSseq.similarity(p, r)), len(p), len(r)) for r in members)
    return out


def overlap_fields(held_out: list[list[int]], training: list[list[int]]) -> list[dict]:
    """The results.jsonl fields of each held-out row: ``ngram_overlap`` and ``near_duplicate``."""
    return [{"ngram_overlap": o, "near_duplicate": d}
            for o, d in zip(ngram_overlaps(held_out, training), near_duplicates(held_out, training))]
