"""Audit speed: (a) goldfish's batched, KV-cached extraction + metrics vs a per-document
``model.generate`` + ``rouge-score`` loop, same model, same documents, same outputs (checked);
(b) goldfish's Rouge-L vs ``rouge-score`` on 10k text pairs, same values (checked).
Usage: python benchmarks/bench_audit.py [--docs 64] [--batch 32] [--pairs 10000]
"""

from __future__ import annotations

import argparse
import random
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--prefix", type=int, default=32)
    parser.add_argument("--suffix", type=int, default=50)
    parser.add_argument("--pairs", type=int, default=10_000)
    args = parser.parse_args()

    from rouge_score import rouge_scorer
    from transformers import AutoModelForCausalLM

    from goldfish.audit.extraction import generate_suffixes
    from goldfish.audit.metrics import extraction_metrics, rouge_l
    from goldfish.embedded.corpus import corpus_part
    from goldfish.embedded.tiny import load_embedded_tokenizer, tiny_llama_config

    tokenizer = load_embedded_tokenizer()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_llama_config(tokenizer, "tiny")).eval()
    texts = [d["text"] for d in corpus_part("background")]
    docs = [ids for ids in (tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts)
            if len(ids) >= args.prefix + args.suffix][: args.docs]
    prefixes = [d[-(args.prefix + args.suffix) : -args.suffix] for d in docs]
    suffixes = [d[-args.suffix :] for d in docs]
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    print(f"tiny Llama (4 x 256, vocab {len(tokenizer)}), CPU, {torch.get_num_threads()} threads; "
          f"{len(docs)} documents, prefix {args.prefix}, suffix {args.suffix} tokens, greedy\n")

    t0 = time.perf_counter()
    ours = generate_suffixes(model, tokenizer, prefixes, args.suffix, batch_size=args.batch, progress=False)
    our_rows = [extraction_metrics(g, s, tokenizer.decode(g), tokenizer.decode(s)) for g, s in zip(ours, suffixes)]
    t_ours = time.perf_counter() - t0

    t0 = time.perf_counter()
    loop, loop_rouge = [], []
    with torch.no_grad():
        for p, s in zip(prefixes, suffixes):
            out = model.generate(torch.tensor([p]), max_new_tokens=args.suffix, do_sample=False, eos_token_id=[],
                                 pad_token_id=tokenizer.pad_token_id)[0, len(p) :].tolist()
            loop.append(out)
            loop_rouge.append(scorer.score(tokenizer.decode(s), tokenizer.decode(out))["rougeL"].fmeasure)
    t_loop = time.perf_counter() - t0
    same = ours == loop and [r["rouge_l"] for r in our_rows] == loop_rouge
    print(f"(a) extraction + metrics: goldfish {len(docs) / t_ours:8.1f} docs/s | per-document loop "
          f"{len(docs) / t_loop:6.1f} docs/s | speed-up {t_loop / t_ours:5.1f}x | same outputs: {same}")

    rng = random.Random(0)
    pairs = []
    for _ in range(args.pairs):
        a, b = rng.choice(texts), rng.choice(texts)
        pairs.append((a[:300], b[:300] if rng.random() < 0.5 else a[10:310]))
    t0 = time.perf_counter()
    fast = [rouge_l(p, t) for p, t in pairs]
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    slow = [scorer.score(t, p)["rougeL"].fmeasure for p, t in pairs]
    t_slow = time.perf_counter() - t0
    print(f"(b) Rouge-L on {args.pairs} pairs: goldfish {t_fast:.3f}s | rouge-score {t_slow:.3f}s | "
          f"speed-up {t_slow / t_fast:5.1f}x | same values: {fast == slow}")


if __name__ == "__main__":
    main()
