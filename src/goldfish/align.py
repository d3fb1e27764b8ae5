"""Near-duplicate passages, rule "goldfish-align-v1": copies that differ a little drop the same tokens
where they agree.

goldfish-hash-v1 decides a target from the h tokens before it, so two copies of a passage agree only
where their last h tokens agree: after another greeting, other whitespace, a swapped word or a
template slot's value, the next h targets are decided afresh in each copy, and together the copies
teach every token. This rule finds near-duplicate passages in the whole training set, aligns each
copy to one representative token by token, and gives every aligned target the representative's
hash; a target without a counterpart (an inserted word, a slot's value) keeps its own.

Spec (``hash``, ``mix32`` and ``mul32`` of goldfish-hash-v1, ``goldfish.hashing``; h and seed from
the config)::

    passage     in an example (one document before packing; ids x, labels y), a maximal run of
                positions a .. e-1 with y_t != ignore_index and e - a >= MIN_TOKENS (16); its tokens
                p = x_a .. x_e-1, its lead-in x_max(0, a-h) .. x_a-1
    signature   g_i = hash(SHINGLE_SEED, [p_i, p_i+1, p_i+2]) for i = 0 .. |p|-3
                m_q = min_i mix32(g_i ^ salt_q),  salt_q = mix32(MINHASH_SALT ^ mul32(q + 1, 0x9E3779B9)),
                q = 0 .. 63
    candidates  two passages with m_4b .. m_4b+3 all equal for some band b in 0 .. 15
    component   a connected component of the candidate graph over every passage of the training set
    order       in a component: passages with more copies (same tokens) in the component first, then
                by tokens, then by lead-in (lexicographic)
    clusters    up to MAX_REPRESENTATIVES (64) times: the first passage in order not yet placed is a
                representative r; it and every unplaced passage p with 10 * LCS(p, r) >= 3 * (|p| + |r|)
                (similarity 2 LCS / (|p| + |r|) >= 0.6, LCS = longest common subsequence of the ids)
                are placed, as r's cluster. A cluster of one passage is none.
    alignment   of a member p to its representative r: their longest common prefix and suffix match
                position by position; on the parts A (of r) and B (of p) between them, with L[j][i]
                the LCS of B[:j] and A[:i], from (i, j) = (|A|, |B|) while i > 0 and j > 0:
                if L[j][i] == L[j][i-1]: i -= 1; else j -= 1, and unless j > 0 and
                L[j][i] > L[j][i-1], A[i-1] matches B[j] and i -= 1. (rapidfuzz's LCSseq.opcodes.)
    decision    a target of p matched to r's token at position s of r's example takes
                hash(seed, the context of s in r's example: up to h tokens before s, lead-in included)
                as its hash; it drops iff that hash < floor(2**32 / k) with its own k. Every other
                target keeps goldfish-hash-v1; protected targets follow goldfish-protect-v1.

Bound: a training set where a candidate passage (one in a component) is longer than
MAX_ALIGNED_TOKENS (32,768) tokens is refused, not aligned (the alignment holds |p| * |r| bits:
134 MB at the bound, 5 GB for two copies of 200k tokens); every set it accepts gets the rule above.

What it guarantees: within one training set, every member of a cluster drops exactly the
representative's tokens on every aligned position (same k), whatever came before it (another
prompt, greeting or slot value). The representative, any copy with its tokens and lead-in, and every
passage outside a cluster keep their hash-v1 decisions, so exact-duplicate documents are masked as
hash-v1 masks them. Clusters, their order and the alignment read the tokens only, never record order,
batching, packing, padding, ``num_proc`` or the number of processes; adding or removing data can
move a passage into a cluster or change its representative.

The decisions reach the mask as a per-token column ``goldfish_aligned`` (int64): -1 where the target
keeps its own hash, else the representative's hash (computed for the config's seed and h). This
module holds the rule's pure parts; ``goldfish.data.near_duplicates`` applies it to a corpus (the
LCS by rapidfuzz, components by SciPy).
"""

from __future__ import annotations

import numpy as np

from goldfish.hashing import MASK32, context_hashes, mix32

ALIGN_VERSION = "goldfish-align-v1"
MIN_TOKENS = 16
SHINGLE = 3
NUM_PERM, BANDS = 64, 16
ROWS = NUM_PERM // BANDS
MAX_REPRESENTATIVES = 64
MAX_ALIGNED_TOKENS = 32768  # the longest passage a candidate may have: the alignment's memory is |p| * |r| / 8 bytes
SHINGLE_SEED = 0x53484E47  # "SHNG"
MINHASH_SALT = 0x4D494E48  # "MINH"
_GOLDEN = 0x9E3779B9
_SALTS = mix32(np.int64(MINHASH_SALT) ^ ((np.arange(1, NUM_PERM + 1, dtype=np.int64) * _GOLDEN) & MASK32))


def passages(labels, ignore_index: int = -100) -> list[tuple[int, int]]:
    """(a, e) of each passage of one example: maximal runs of supervised labels with at least MIN_TOKENS positions."""
    sup = np.concatenate([[False], np.asarray(labels) != ignore_index, [False]])
    edges = np.flatnonzero(sup[1:] != sup[:-1])
    return [(int(a), int(e)) for a, e in zip(edges[::2], edges[1::2]) if e - a >= MIN_TOKENS]


def signatures(token_lists: list) -> np.ndarray:
    """int64 (N, NUM_PERM): the MinHash signature of each passage (each at least SHINGLE tokens)."""
    lengths = np.asarray([len(t) for t in token_lists], dtype=np.int64)
    if len(lengths) == 0:
        return np.zeros((0, NUM_PERM), np.int64)
    if (lengths < SHINGLE).any():
        raise ValueError(f"a passage needs at least {SHINGLE} tokens")
    # one flat row: the hash of the 3 ids ending at t is the v1 hash of position t + 1's context
    ids = np.concatenate([np.append(np.asarray(t, dtype=np.int64), 0) for t in token_lists])
    starts = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]])
    pos = np.arange(len(ids)) - np.repeat(starts, lengths + 1)
    hashes = context_hashes(ids, np.minimum(pos, SHINGLE), SHINGLE, SHINGLE_SEED)
    shingles = hashes[pos >= SHINGLE]  # per passage, its |p| - 2 shingles in order
    offsets = np.concatenate([[0], np.cumsum(lengths - SHINGLE + 1)[:-1]])
    return np.stack([np.minimum.reduceat(mix32(shingles ^ salt), offsets) for salt in _SALTS], axis=1)


def bands(signature: np.ndarray) -> np.ndarray:
    """int64 (N, BANDS, ROWS): the signature's bands; passages sharing one band are candidates."""
    return signature.reshape(len(signature), BANDS, ROWS)


def similar(lcs: int, n: int, m: int) -> bool:
    """The clustering threshold on an LCS of ``lcs`` ids between passages of n and m ids."""
    return 10 * lcs >= 3 * (n + m)


def representative_order(tokens: list, lead_ins: list) -> list[int]:
    """Indices of a component's passages in the order representatives are tried (see the spec)."""
    keys = [tuple(t) for t in tokens]
    count: dict[tuple, int] = {}
    for key in keys:
        count[key] = count.get(key, 0) + 1
    return sorted(range(len(keys)), key=lambda i: (-count[keys[i]], keys[i], tuple(lead_ins[i])))


def clusters(tokens: list, lead_ins: list, lcs) -> list[tuple[int, list[int]]]:
    """(representative, members with it first) of each cluster of one component; ``lcs(i, j)`` is the
    LCS length of passages i and j. Passages in no cluster are left out."""
    order = representative_order(tokens, lead_ins)
    placed = [False] * len(tokens)
    out = []
    for _ in range(MAX_REPRESENTATIVES):
        rep = next((i for i in order if not placed[i]), None)
        if rep is None:
            break
        members = [rep] + [i for i in order if not placed[i] and i != rep and similar(lcs(i, rep), len(tokens[i]), len(tokens[rep]))]
        for i in members:
            placed[i] = True
        if len(members) > 1:
            out.append((rep, members))
    return out


def representative_hashes(ids, start: int, end: int, h: int, seed: int) -> np.ndarray:
    """int64: goldfish-hash-v1 of positions start .. end-1 of one example (ids), in their own contexts."""
    lo = max(0, start - h)
    window = np.asarray(ids[lo:end], dtype=np.int64)
    context = np.minimum(np.arange(len(window)), h)
    return context_hashes(window, context, h, seed)[start - lo :]
