"""goldfish-align-v1 on a training set: the ``goldfish_aligned`` column of every example.

The rule itself (passages, signatures, clusters, alignment, decisions) is specified in
``goldfish.align``; this module applies it to a whole corpus:

1. every example's passages and their MinHash signatures (a batched ``datasets.map`` on
   ``num_proc`` workers for a prepared dataset; in memory for a list of examples);
2. candidate pairs from the 16 bands (per band, a sort of the passages by its 4 values: equal
   neighbours are candidates), components by ``scipy.sparse.csgraph.connected_components``;
3. per component of two or more passages, in this process: clusters by LCS length
   (``rapidfuzz.distance.LCSseq.similarity``), each member aligned to its representative
   (``LCSseq.opcodes``: its "equal" blocks are the spec's matches), matched targets given the
   representative's hash-v1 hash.

Cost: 256 bytes of signature per passage held in memory at step 2, and per component at most
MAX_REPRESENTATIVES LCS computations per passage at step 3; the tokens read at step 3 are those of
passages in components only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from goldfish.align import BANDS, MAX_ALIGNED_TOKENS, NUM_PERM, bands, clusters, passages, representative_hashes, signatures


@dataclass
class Aligned:
    """What the rule decided for a training set: per example index with aligned targets, the
    positions and hashes (int64 arrays) of those targets; and the cluster statistics."""

    targets: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    clusters: int = 0
    passages: int = 0  # passages in a cluster, representatives included
    aligned_targets: int = 0  # targets of non-representative members given a representative's hash

    def column(self, index: int, length: int) -> np.ndarray:
        """The ``goldfish_aligned`` column (int64, -1 = own hash) of example ``index`` of ``length`` tokens."""
        out = np.full(length, -1, dtype=np.int64)
        if index in self.targets:
            positions, hashes = self.targets[index]
            out[positions] = hashes
        return out

    def stats(self) -> dict:
        return {"clusters": self.clusters, "passages_clustered": self.passages, "aligned_targets": self.aligned_targets}


def example_passages(ids_list, labels_list, ignore_index: int) -> tuple[np.ndarray, np.ndarray]:
    """((example, start, end) int64 (N, 3), signatures int64 (N, NUM_PERM)) of every passage of the examples."""
    found = [(n, a, e) for n, labels in enumerate(labels_list) for a, e in passages(labels, ignore_index)]
    sigs = signatures([np.asarray(ids_list[n][a:e]) for n, a, e in found])
    return np.asarray(found, dtype=np.int64).reshape(-1, 3), sigs


def components(sigs: np.ndarray) -> list[np.ndarray]:
    """Passage indices of each connected component of two or more passages of the band-collision graph."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(sigs)
    if n < 2:
        return []
    banded = bands(sigs)
    edges = []
    for b in range(BANDS):
        rows = banded[:, b, :]
        order = np.lexsort(rows.T[::-1])
        same = (rows[order[1:]] == rows[order[:-1]]).all(axis=1)
        edges.append(np.stack([order[:-1][same], order[1:][same]], axis=1))
    pairs = np.concatenate(edges)
    graph = coo_matrix((np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    order = np.argsort(label, kind="stable")
    cuts = np.flatnonzero(np.diff(label[order])) + 1
    return [c for c in np.split(order, cuts) if len(c) > 1]


def align_components(found: np.ndarray, comps: list[np.ndarray], ids_of, h: int, seed: int) -> Aligned:
    """Cluster and align the passages of each component (``found``: (example, start, end) rows;
    ``ids_of(example)``: that example's ids)."""
    from rapidfuzz.distance import LCSseq

    result = Aligned()
    per_example: dict[int, list] = {}
    for comp in comps:
        rows = [tuple(int(v) for v in found[i]) for i in comp]
        n, a, e = max(rows, key=lambda r: r[2] - r[1])
        if e - a > MAX_ALIGNED_TOKENS:
            raise ValueError(f"--near-duplicates align: example {n} has a near-duplicate passage of {e - a:,} supervised tokens; "
                             f"the rule aligns passages of up to {MAX_ALIGNED_TOKENS:,} (its memory grows with the square of "
                             "the length): lower --seq-len or train without --near-duplicates align")
        ids = {n: np.asarray(ids_of(n), dtype=np.int64) for n, _, _ in rows}
        tokens = [ids[n][a:e].tolist() for n, a, e in rows]
        lead_ins = [ids[n][max(0, a - h) : a].tolist() for n, a, e in rows]
        for rep, members in clusters(tokens, lead_ins, lambda i, j: int(LCSseq.similarity(tokens[i], tokens[j]))):
            rn, ra, re = rows[rep]
            rep_hashes = representative_hashes(ids[rn], ra, re, h, seed)
            result.clusters += 1
            result.passages += len(members)
            for m in members[1:]:
                n, a, _ = rows[m]
                src, dst = [], []
                for op in LCSseq.opcodes(tokens[rep], tokens[m]):
                    if op.tag == "equal":
                        src.append(np.arange(op.src_start, op.src_end))
                        dst.append(np.arange(op.dest_start, op.dest_end))
                if src:
                    src, dst = np.concatenate(src), np.concatenate(dst)
                    per_example.setdefault(n, []).append((a + dst, rep_hashes[src]))
                    result.aligned_targets += len(src)
    result.targets = {n: (np.concatenate([p for p, _ in parts]), np.concatenate([v for _, v in parts]))
                      for n, parts in per_example.items()}
    return result


def aligned_examples(ids_list, labels_list, h: int, seed: int, ignore_index: int = -100) -> Aligned:
    """The rule on a list of examples (ids and labels, one document each), in memory."""
    found, sigs = example_passages(ids_list, labels_list, ignore_index)
    return align_components(found, components(sigs), lambda n: ids_list[n], h, seed)


class _PassageSignatures:
    """Batched map: examples -> one row per passage (example index, start, end, signature)."""

    def __init__(self, ignore_index: int):
        self.ignore_index = ignore_index

    def __call__(self, batch: dict, indices: list[int]) -> dict:
        found, sigs = example_passages(batch["input_ids"], batch["labels"], self.ignore_index)
        found[:, 0] = np.asarray(indices, dtype=np.int64)[found[:, 0]]  # batch positions -> dataset indices
        return {"example": found[:, 0], "start": found[:, 1], "end": found[:, 2], "signature": list(sigs)}


def aligned_dataset(examples, h: int, seed: int, ignore_index: int, num_proc: int | None, cache_file: str) -> Aligned:
    """The rule on a prepared ``datasets.Dataset`` of examples (``input_ids``, ``labels``);
    the passages' signatures are mapped on ``num_proc`` workers into ``cache_file``."""
    from datasets import Features, List, Value

    features = Features({"example": Value("int64"), "start": Value("int64"), "end": Value("int64"),
                         "signature": List(Value("int64"), length=NUM_PERM)})
    rows = examples.select_columns(["input_ids", "labels"]).map(
        _PassageSignatures(ignore_index), batched=True, batch_size=1000, with_indices=True,
        remove_columns=["input_ids", "labels"], features=features, num_proc=num_proc if len(examples) >= 512 else None,
        cache_file_name=cache_file, desc="near-duplicates: signatures")
    table = rows.data
    found = np.stack([np.asarray(table.column(c)) for c in ("example", "start", "end")], axis=1).reshape(-1, 3)
    sigs = np.asarray(table.column("signature").combine_chunks().flatten()).reshape(-1, NUM_PERM)
    comps = components(sigs)
    needed = sorted({int(found[i, 0]) for c in comps for i in c})
    fetched = dict(zip(needed, examples.select_columns(["input_ids"])[needed]["input_ids"])) if needed else {}
    return align_components(found, comps, fetched.__getitem__, h, seed)
