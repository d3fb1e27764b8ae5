"""Cost of the goldfish mask inside a Megatron-core data loader: tokens/s of ``GoldfishDataset`` vs
the plain ``GPTDataset`` it wraps, side by side in one process, at 4k, 8k and 32k sequence length.

The corpus: random token ids (vocabulary 131,072, int32) in documents of 50 to 8,000 tokens, each
ending with EOD, written with Megatron's ``IndexedDatasetBuilder``; the samples are read in
Megatron's shuffled order. One torch thread (a DataLoader worker's setting). Each round reads the
same samples through the plain dataset, then through the wrapper (k=4 h=13 and k=50 h=50); the
median over rounds is reported.
Usage: python benchmarks/bench_megatron_loader.py [--samples 16] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from megatron_data import EodTokenizer, gpt_datasets, write_indexed  # noqa: E402

from goldfish.integrations.megatron import GoldfishDataset, MegatronGoldfishConfig  # noqa: E402

VOCAB, EOD = 131_072, 131_071


def _tokens_per_s(dataset, indices) -> float:
    start = time.perf_counter()
    for i in indices:
        dataset[i]
    return len(indices) * len(dataset[indices[0]]["tokens"]) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    docs = [list(rng.integers(0, EOD, n)) + [EOD] for n in rng.integers(50, 8000, 1200)]  # ~4.8 M tokens
    with tempfile.TemporaryDirectory() as tmp:
        prefix = write_indexed(Path(tmp) / "corpus", docs)
        print("| sequence length | plain GPTDataset | goldfish k=4 h=13 | ratio | goldfish k=50 h=50 | ratio |")
        print("| --- | --- | --- | --- | --- | --- |")
        for seq in (4096, 8192, 32768):
            plain = gpt_datasets([prefix], None, args.samples, seq, EodTokenizer(VOCAB, EOD))
            variants = {"plain": plain, "k4": GoldfishDataset(plain, MegatronGoldfishConfig(k=4, h=13)),
                        "k50": GoldfishDataset(plain, MegatronGoldfishConfig(k=50, h=50))}
            indices = list(range(min(args.samples, len(plain))))
            rates = {name: [] for name in variants}
            for _ in range(args.rounds):
                for name, ds in variants.items():
                    rates[name].append(_tokens_per_s(ds, indices))
            med = {name: statistics.median(r) for name, r in rates.items()}
            print(f"| {seq:,} | {med['plain'] / 1e6:.2f} M tok/s | {med['k4'] / 1e6:.2f} M tok/s | {med['k4'] / med['plain']:.2f}× "
                  f"| {med['k50'] / 1e6:.2f} M tok/s | {med['k50'] / med['plain']:.2f}× |", flush=True)


if __name__ == "__main__":
    main()
