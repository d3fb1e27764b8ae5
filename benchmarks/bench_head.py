"""The LM head and its cross-entropy alone, at the kept positions: goldfish's tiled function vs full
logits vs the libraries that could do it on this machine (Apple's cut-cross-entropy, its CPU
``torch_compile`` path, if importable; TRL's ``ChunkedLogProbFunction``), forward + backward in fp32.

Each implementation runs in its own subprocess: errors of the loss and of the two gradients against
full logits, the first call (compilation included), the best of 2 timed calls, and the peak RSS of
the timed calls above the state before them.
Usage: python benchmarks/bench_head.py [--n 1536] [--hidden 256] [--vocab 151936] [--softcap 30]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from peak_rss import peak_above, settle

IMPLEMENTATIONS = ("full", "goldfish", "cut-cross-entropy", "trl")


def run_one(impl: str, n: int, hidden_size: int, vocab: int, softcap: float | None) -> dict:
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    h = torch.randn(n, hidden_size, requires_grad=True)
    w = (torch.randn(vocab, hidden_size) * 0.05).requires_grad_()
    t = torch.randint(0, vocab, (n,))

    def full():
        z = h @ w.t()
        return F.cross_entropy(z if softcap is None else softcap * torch.tanh(z / softcap), t, reduction="sum")

    if impl == "goldfish":
        from goldfish.loss import tiled_linear_cross_entropy

        fn = lambda: tiled_linear_cross_entropy(h, w, None, t, softcap=softcap)  # noqa: E731
    elif impl == "cut-cross-entropy":
        from cut_cross_entropy import linear_cross_entropy

        fn = lambda: linear_cross_entropy(h, w, t, softcap=softcap, reduction="sum", impl="torch_compile")  # noqa: E731
    elif impl == "trl":
        from trl.kernels import ChunkedLogProbFunction

        fn = lambda: -ChunkedLogProbFunction.apply(h, w, None, t, 1.0, 32768, softcap, 1.0, ("log_probs",))[0].sum()  # noqa: E731
    else:
        fn = full

    want = full()
    want.backward()
    want_h, want_w = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    t0 = time.perf_counter()
    got = fn()
    got.backward()
    first = time.perf_counter() - t0
    out = {"loss_rel": abs(got.item() - want.item()) / abs(want.item()), "first_s": first,
           "grad_h_rel": ((h.grad - want_h).abs().max() / want_h.abs().max()).item(),
           "grad_w_rel": ((w.grad - want_w).abs().max() / want_w.abs().max()).item()}
    del want, want_h, want_w, got
    h.grad = w.grad = None
    base = settle()
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        fn().backward()
        times.append(time.perf_counter() - t0)
        h.grad = w.grad = None
    return {**out, "time_s": min(times), "peak_mib": peak_above(base)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1536, help="kept positions")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=151_936)
    parser.add_argument("--softcap", type=float, default=None)
    parser.add_argument("--worker", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_one(args.worker, args.n, args.hidden, args.vocab, args.softcap)))
        return
    print(f"n = {args.n} kept positions, H = {args.hidden}, V = {args.vocab}, soft-cap {args.softcap}, fp32, CPU\n")
    print("| implementation | loss rel. error | grad hidden rel. error | grad weight rel. error | first call | time | peak memory |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for impl in IMPLEMENTATIONS:
        cmd = [sys.executable, __file__, "--worker", impl, "--n", str(args.n), "--hidden", str(args.hidden), "--vocab", str(args.vocab)]
        cmd += [] if args.softcap is None else ["--softcap", str(args.softcap)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"| {impl} | not run: {(done.stderr.strip().splitlines() or ['?'])[-1]} ||||||")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"| {impl} | {r['loss_rel']:.1e} | {r['grad_h_rel']:.1e} | {r['grad_w_rel']:.1e} | {r['first_s']:.2f} s | "
              f"{r['time_s']:.2f} s | {r['peak_mib']:.0f} MiB |", flush=True)


if __name__ == "__main__":
    main()
