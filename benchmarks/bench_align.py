"""goldfish-align-v1 at scale: the whole rule (signatures on ``--num-proc`` workers, bands,
components, clusters, alignment) on a synthetic training set of N examples, each one supervised
passage of 48-96 random tokens, a share of them near-duplicate copies of 100 templates (3 tokens
swapped); prints the time, passages a second, the clusters found and the
peak memory above the start.

Usage: python benchmarks/bench_align.py [--examples N] [--near-share S] [--num-proc P]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
from datasets import Dataset
from peak_rss import peak_above, settle

from goldfish.data.near_duplicates import aligned_dataset


def synthetic(n: int, near_share: float, seed: int = 0) -> Dataset:
    """N examples: a 12-token prompt (labels -100) and a reply; ``near_share`` of the replies are one
    of 100 templates with 3 of their tokens replaced, the rest random."""
    rng = np.random.default_rng(seed)
    templates = [rng.integers(0, 32_000, rng.integers(48, 97)) for _ in range(100)]

    def rows():
        for _ in range(n):
            prompt = rng.integers(0, 32_000, 12)
            if rng.random() < near_share:
                reply = templates[rng.integers(100)].copy()
                reply[rng.integers(0, len(reply), 3)] = rng.integers(0, 32_000, 3)
            else:
                reply = rng.integers(0, 32_000, rng.integers(48, 97))
            ids = np.concatenate([prompt, reply])
            yield {"input_ids": ids.tolist(), "labels": [-100] * 12 + reply.tolist()}

    return Dataset.from_generator(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=200_000)
    parser.add_argument("--near-share", type=float, default=0.05)
    parser.add_argument("--num-proc", type=int, default=2)
    args = parser.parse_args()
    data = synthetic(args.examples, args.near_share)
    base = settle()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        aligned = aligned_dataset(data, 13, 0, -100, args.num_proc, f"{tmp}/signatures.arrow")
        seconds = time.perf_counter() - start
    print(f"{args.examples:,} examples ({args.near_share:.0%} near-duplicates of 100 templates), num_proc {args.num_proc}: "
          f"{seconds:.1f} s, {args.examples / seconds:,.0f} passages/s; {aligned.clusters} clusters of "
          f"{aligned.passages:,} passages, {aligned.aligned_targets:,} aligned targets; peak RSS +{peak_above(base):.0f} MiB")


if __name__ == "__main__":
    main()
