"""Training step time and peak memory: goldfish (k=4, logits only where supervised) vs the standard
loss vs goldfish with full logits, on a tiny Llama with vocab 32k and 2k, CPU.

Each (vocab, variant) runs in its own subprocess so its peak RSS is its own; all run in one go and
the ratios are printed side by side. "step memory" = peak RSS during the timed steps minus RSS
before the first step (activations, logits, gradients, optimizer state).
Usage: python benchmarks/bench_train.py [--batch 4] [--seq 512] [--steps 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

VARIANTS = ("standard", "goldfish", "goldfish-full-logits")


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def run_one(variant: str, vocab: int, batch: int, seq: int, steps: int) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from goldfish import GoldfishConfig, apply_goldfish, goldfish_loss, supervised_logits_loss

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=256, intermediate_size=704, num_hidden_layers=4,
                         num_attention_heads=4, max_position_embeddings=seq, tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, vocab, (batch, seq))
    cfg = GoldfishConfig(k=4)

    def step():
        if variant == "standard":
            loss = model(input_ids=ids, labels=ids).loss
        elif variant == "goldfish":  # the collator masks the labels, the loss builds supervised logits only
            loss = supervised_logits_loss(model, ids, apply_goldfish(ids, ids, cfg))
        else:
            loss = goldfish_loss(model(input_ids=ids).logits, ids, ids, cfg)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    base = _rss_mib()
    step()  # warm-up: allocator, optimizer state
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"step_s": statistics.median(times), "step_mem_mib": peak - base}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--worker", nargs=2, metavar=("VARIANT", "VOCAB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_one(args.worker[0], int(args.worker[1]), args.batch, args.seq, args.steps)))
        return
    import torch

    print(f"tiny Llama (4 x 256), batch {args.batch} x {args.seq} tokens, AdamW, CPU, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; median of {args.steps} steps after a warm-up\n")
    header = f"{'vocab':>6} {'variant':>21} | {'step':>8} {'step memory':>12} | {'time ÷ std':>10} {'mem ÷ std':>9}"
    print(header + "\n" + "-" * len(header))
    for vocab in (32_000, 2_000):
        results = {}
        for variant in VARIANTS:
            cmd = [sys.executable, __file__, "--worker", variant, str(vocab), "--batch", str(args.batch),
                   "--seq", str(args.seq), "--steps", str(args.steps)]
            results[variant] = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
        std = results["standard"]
        for variant, r in results.items():
            print(f"{vocab:>6} {variant:>21} | {r['step_s']:>7.3f}s {r['step_mem_mib']:>8.0f} MiB | "
                  f"{r['step_s'] / std['step_s']:>9.2f}x {r['step_mem_mib'] / std['step_mem_mib']:>8.2f}x")


if __name__ == "__main__":
    main()
