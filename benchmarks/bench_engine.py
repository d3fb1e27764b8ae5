"""The audit in-process (HF batched ``generate``) against the audit through vLLM (``--engine vllm``),
side by side in one run: the same tiny Llama (built from a config, fp32, saved), the same documents
(the embedded background corpus), the same settings; greedy extraction, then ``--samples`` sampled
continuations. Prints each stage's seconds (``summary.json``'s ``timing_s``), the engine's over HF's
ratio, the vLLM start, and whether the greedy token ids are identical on every document.
Usage: python benchmarks/bench_engine.py --vllm-python .engine-venv/bin/python [--docs 32] [--samples 4]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vllm-python", required=True)
    parser.add_argument("--docs", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--prefix", type=int, default=32)
    parser.add_argument("--suffix", type=int, default=50)
    parser.add_argument("--samples", type=int, default=4)
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM

    from goldfish.audit import AuditConfig, run_audit
    from goldfish.embedded.corpus import corpus_part
    from goldfish.embedded.tiny import load_embedded_tokenizer, tiny_llama_config

    tokenizer = load_embedded_tokenizer()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_llama_config(tokenizer, "tiny")).eval()
    root = Path(tempfile.mkdtemp(prefix="goldfish-bench-engine-"))
    model.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    docs = [d for d in corpus_part("background")
            if len(tokenizer(d["text"], add_special_tokens=False)["input_ids"]) >= args.prefix + args.suffix][: args.docs]
    (root / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    print(f"tiny Llama (4 x 256, vocab {len(tokenizer)}, fp32), CPU, {torch.get_num_threads()} threads; {len(docs)} documents, "
          f"prefix {args.prefix}, suffix {args.suffix} tokens; greedy, then {args.samples} samples a document (T=1); "
          f"batch {args.batch} (HF: sequences a batch; engine: requests in flight)\n")

    results = {}
    for engine in ("hf", "vllm"):
        cfg = AuditConfig(models=[str(root / "model")], data=str(root / "docs.jsonl"), suffix_len=args.suffix,
                          prefix_len=args.prefix, batch_size=args.batch, samples=args.samples, dtype="float32", device="cpu",
                          progress=False, extraction_probability=False, engine=engine,
                          vllm_python=args.vllm_python if engine == "vllm" else None)
        start = time.perf_counter()
        results[engine] = run_audit(cfg)
        results[engine]["bench_wall_s"] = time.perf_counter() - start
    hf, vllm = (results[e]["models"]["model"]["timing_s"] for e in ("hf", "vllm"))
    for stage in ("greedy", "sampled"):
        print(f"{stage:8s}: HF batched {hf[stage]:7.2f} s | vLLM {vllm[stage]:7.2f} s | vLLM is {hf[stage] / vllm[stage]:4.2f}x HF")
    work = lambda e: sum(results[e]["models"]["model"]["timing_s"].values())  # noqa: E731
    print(f"whole audit (wall): HF {results['hf']['bench_wall_s']:.1f} s | vLLM {results['vllm']['bench_wall_s']:.1f} s, of which "
          f"{results['vllm']['bench_wall_s'] - work('vllm'):.1f} s outside the stages (vLLM's start and stop, loading)")
    same = all(a["generated_ids"] == b["generated_ids"] for a, b in zip(results["hf"]["rows"], results["vllm"]["rows"]))
    print(f"greedy token ids identical on all {len(docs)} documents: {same}")


if __name__ == "__main__":
    main()
