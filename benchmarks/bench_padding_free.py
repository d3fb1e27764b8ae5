"""Training step time with padded vs padding-free (flattened) batches: the same random batches of the
chat experiment's conversations, collated by ``GoldfishCollator`` over ``DataCollatorForSeq2Seq``
(what ``goldfish train`` does) or over ``DataCollatorWithFlattening`` (``--padding-free``), forward +
backward through ``supervised_logits_loss`` on the tiny Llama, CPU. The losses must agree (checked).
Each batch runs both ways back to back; two passes.
Usage: python benchmarks/bench_padding_free.py [--batches 80] [--batch 4] [--conversations 400]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=80)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--conversations", type=int, default=400)
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, DataCollatorWithFlattening

    from goldfish import GoldfishConfig, supervised_logits_loss
    from goldfish.data.tokenize import build_examples
    from goldfish.embedded.tiny import load_embedded_tokenizer, tiny_llama_config
    from goldfish.experiments.chat_data import build_chats
    from goldfish.integrations.hf import GoldfishCollator

    tokenizer = load_embedded_tokenizer()
    examples = [{"input_ids": e["input_ids"], "labels": e["labels"]}
                for e in build_examples(build_chats(args.conversations, 0.05, 0.08)["train"], tokenizer, 512, 4)]
    lengths = [len(e["input_ids"]) for e in examples]
    random.seed(0)
    batches = [random.sample(examples, args.batch) for _ in range(args.batches)]
    cfg = GoldfishConfig(k=4)
    collators = {"padded": GoldfishCollator(DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100), cfg),
                 "padding-free": GoldfishCollator(DataCollatorWithFlattening(return_position_ids=True, separator_id=-100), cfg)}
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_llama_config(tokenizer, "tiny"))
    model.train(False)  # no dropout: both layouts must give the same loss

    def step(name: str, features) -> tuple[float, int, float]:
        batch = collators[name](features)
        start = time.perf_counter()
        loss = supervised_logits_loss(model, batch["input_ids"], batch["labels"], attention_mask=batch.get("attention_mask"),
                                      position_ids=batch.get("position_ids"))
        loss.backward()
        seconds = time.perf_counter() - start
        model.zero_grad(set_to_none=True)
        return seconds, batch["input_ids"].numel(), loss.item()

    print(f"{len(examples)} conversations, {min(lengths)}-{max(lengths)} tokens (mean {statistics.mean(lengths):.0f}); "
          f"{args.batches} batches of {args.batch}; tiny Llama, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("each batch runs padded, then padding-free, back to back (machine load drifts alike for both)\n")
    for rnd in (1, 2):
        pairs = [(step("padded", b), step("padding-free", b)) for b in batches]
        padded, flat = [p for p, _ in pairs[2:]], [f for _, f in pairs[2:]]
        diff = max(abs(p[2] - f[2]) for p, f in pairs)
        for name, runs in (("padded", padded), ("padding-free", flat)):
            print(f"pass {rnd}  {name:>12}: {1000 * statistics.mean(r[0] for r in runs):6.1f} ms/step, "
                  f"{statistics.mean(r[1] for r in runs):5.0f} tokens computed a step")
        ratio = statistics.median(f[0] / p[0] for p, f in zip(padded, flat))
        print(f"pass {rnd}  padding-free ÷ padded: {ratio:.2f}x time (median over batches; max |loss difference| {diff:.1e})\n")


if __name__ == "__main__":
    main()
