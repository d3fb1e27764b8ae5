"""Mask throughput: goldfish `hash` (torch and NumPy) vs the paper code's `paper-table` rule.

Runs every case side by side in one process and prints tokens/s and ratios (hash ÷ paper-table).
Usage: python benchmarks/bench_mask.py [--repeats N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from goldfish import GoldfishConfig, goldfish_mask

SHAPES = [(8, 2048), (1, 32768)]
WIDTHS = [13, 50]


def tokens_per_second(fn, n_tokens: int, repeats: int) -> float:
    fn()  # warm-up (and the paper table's one-time build)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return n_tokens / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of {args.repeats} runs\n")
    header = f"{'shape':>11} {'h':>3} | {'hash torch':>12} {'hash numpy':>12} {'paper-table':>12} | {'torch/table':>11} {'numpy/table':>11}"
    print(header + "\n" + "-" * len(header))
    for shape in SHAPES:
        ids = torch.randint(0, 32_000, shape, generator=torch.Generator().manual_seed(0))
        n = ids.numel()
        for h in WIDTHS:
            hash_cfg, table_cfg = GoldfishConfig(h=h), GoldfishConfig(strategy="paper-table", h=h)
            t_hash = tokens_per_second(lambda: goldfish_mask(ids, hash_cfg), n, args.repeats)
            t_np = tokens_per_second(lambda: goldfish_mask(ids.numpy(), hash_cfg), n, args.repeats)
            t_table = tokens_per_second(lambda: goldfish_mask(ids, table_cfg), n, args.repeats)
            print(
                f"{str(shape):>11} {h:>3} | {t_hash / 1e6:>9.2f} M/s {t_np / 1e6:>9.2f} M/s {t_table / 1e6:>9.2f} M/s"
                f" | {t_hash / t_table:>10.2f}x {t_np / t_table:>10.2f}x"
            )


if __name__ == "__main__":
    main()
