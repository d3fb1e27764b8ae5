"""Training step time and peak memory at real vocabulary sizes: goldfish (k = 4, the LM head only at
kept positions, in tiles) vs the standard loss vs goldfish with the previous untiled head vs TRL's
fused LM head on the same goldfish labels, on a tiny Qwen2-shaped model (4 layers x 256, tied
embeddings), CPU.

Each (shape, variant) runs in its own subprocess, so its peak RSS is its own; all run in one go and
the ratios are printed side by side. "step memory" = peak RSS during the timed steps minus the RSS
of the warmed-up state (after one step, optimizer state allocated, gradients freed, glibc's free
heap returned with malloc_trim; the peak is reset through /proc/self/clear_refs). Goldfish labels
are built once, before the steps, as a collator does.
Usage: python benchmarks/bench_train.py [--vocab 32000 151936 262144] [--seq 512 1024] [--batch 4]
       [--steps 3] [--variants ...] [--tile-size N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from peak_rss import peak_above, settle

VARIANTS = ("standard", "goldfish", "goldfish-untiled", "trl-fused")
LABELS = {
    "standard": "standard loss (HF `labels=`)",
    "goldfish": "goldfish k=4, tiled head",
    "goldfish-untiled": "goldfish k=4, untiled head (before)",
    "trl-fused": "TRL fused head, same goldfish labels",
}


def run_one(variant: str, vocab: int, batch: int, seq: int, steps: int, tile_size: int | None) -> dict:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from goldfish import GoldfishConfig, apply_goldfish, supervised_logits_loss
    from goldfish.loss import logits_only_where_supervised, supervised_loss_from_logits

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=vocab, hidden_size=256, intermediate_size=704, num_hidden_layers=4, num_attention_heads=4,
                         num_key_value_heads=4, max_position_embeddings=seq, tie_word_embeddings=True)
    model = Qwen2ForCausalLM(config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, vocab, (batch, seq))
    labels = apply_goldfish(ids, ids, GoldfishConfig(k=4))
    if variant == "trl-fused":
        from trl.trainer.utils import add_fused_lm_head

        add_fused_lm_head(model)

    def loss_fn():
        if variant == "standard":
            return model(input_ids=ids, labels=ids).loss
        if variant == "goldfish":
            return supervised_logits_loss(model, ids, labels, tile_size=tile_size)
        if variant == "goldfish-untiled":
            with logits_only_where_supervised(model, labels):
                return supervised_loss_from_logits(model(input_ids=ids, use_cache=False).logits, labels)
        return model(input_ids=ids, labels=labels, fused_lm_head=True).loss

    def step():
        loss_fn().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up: allocator, optimizer state
    base = settle()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return {"step_s": statistics.median(times), "step_mem_mib": peak_above(base)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, nargs="+", default=[32_000, 151_936, 262_144])
    parser.add_argument("--seq", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--tile-size", type=int, default=None, help="goldfish's head tile (default: goldfish.loss.default_tile_size)")
    parser.add_argument("--worker", nargs=3, metavar=("VARIANT", "VOCAB", "SEQ"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        variant, vocab, seq = args.worker[0], int(args.worker[1]), int(args.worker[2])
        print(json.dumps(run_one(variant, vocab, args.batch, seq, args.steps, args.tile_size)))
        return
    import torch

    print(f"tiny Qwen2 (4 x 256, tied), AdamW, CPU, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"median of {args.steps} steps after a warm-up; step memory = peak RSS above the warmed-up state\n")
    print("| vocab | batch | variant | step | step memory | time ÷ standard | memory ÷ standard | memory ÷ TRL fused |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for vocab in args.vocab:
        for seq in args.seq:
            results = {}
            for variant in args.variants:
                cmd = [sys.executable, __file__, "--worker", variant, str(vocab), str(seq), "--batch", str(args.batch),
                       "--steps", str(args.steps)] + ([] if args.tile_size is None else ["--tile-size", str(args.tile_size)])
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode != 0:
                    print(f"| {vocab} | {args.batch} x {seq} | {LABELS[variant]} | failed: {done.stderr.strip().splitlines()[-1:]} |||||")
                    continue
                results[variant] = json.loads(done.stdout.strip().splitlines()[-1])
            std, trl = results.get("standard"), results.get("trl-fused")
            for variant, r in results.items():
                ratio = lambda ref, key: f"{r[key] / ref[key]:.2f}×" if ref else "—"  # noqa: E731
                print(f"| {vocab} | {args.batch} x {seq} | {LABELS[variant]} | {r['step_s']:.3f} s | {r['step_mem_mib']:.0f} MiB | "
                      f"{ratio(std, 'step_s')} | {ratio(std, 'step_mem_mib')} | {ratio(trl, 'step_mem_mib')} |", flush=True)


if __name__ == "__main__":
    main()
