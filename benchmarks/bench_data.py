"""Data preparation at scale: ``goldfish.data.prepare`` (datasets, batched maps, num_proc, cache) vs
plain batched fast tokenization of the same texts, peak RSS against corpus size, and the cached run.

For each size a jsonl corpus is generated from the embedded text (documents of the embedded parts,
each prefixed by a counter so none repeats). Each measurement runs in its own subprocess; peak RSS is
sampled every 0.1 s over the whole process tree (the prepare workers included).
Usage: python benchmarks/bench_data.py [--sizes-mb 50 200 1000] [--num-proc 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def tree_rss_mib(pid: int) -> float:
    """RSS of a process and all its descendants (MiB), from /proc."""
    children: dict[int, list[int]] = {}
    rss = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(d))
            rss[int(d)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        except (OSError, IndexError):
            continue
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0.0)
        todo += children.get(p, [])
    return total


def run_measured(code: str) -> tuple[dict, float]:
    """Run python code in a subprocess (it prints one JSON line last); returns (that JSON, peak tree RSS MiB)."""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    peak = [0.0]

    def sample():
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss_mib(proc.pid))
            time.sleep(0.1)

    t = threading.Thread(target=sample)
    t.start()
    out, _ = proc.communicate()
    t.join()
    if proc.returncode:
        raise SystemExit(f"subprocess failed ({proc.returncode})")
    return json.loads(out.strip().splitlines()[-1]), peak[0]


def write_corpus(path: Path, mb: int) -> int:
    from goldfish.embedded.corpus import PARTS, corpus_part

    texts = [d["text"] for part in PARTS for d in corpus_part(part)]
    written = n = 0
    with path.open("w") as f:
        while written < mb * 2**20:
            line = json.dumps({"text": f"[{n}] " + texts[n % len(texts)]}) + "\n"
            f.write(line)
            written += len(line.encode())
            n += 1
    return n


PLAIN = """
import json, time
from goldfish.embedded.tiny import load_embedded_tokenizer
tok = load_embedded_tokenizer()
start = time.time(); n = 0; batch = []
def flush(batch):
    return sum(len(x) + 1 for x in tok(batch, add_special_tokens=False)["input_ids"])
with open({path!r}) as f:
    for line in f:
        batch.append(json.loads(line)["text"])
        if len(batch) == 1000:
            n += flush(batch); batch = []
n += flush(batch) if batch else 0
print(json.dumps({{"tokens": n, "seconds": time.time() - start}}))
"""

PREPARE = """
import json, time
from goldfish import GoldfishConfig
from goldfish.data.prepare import DataSettings, prepare_dataset
from goldfish.embedded.tiny import load_embedded_tokenizer
tok = load_embedded_tokenizer()
start = time.time()
p = prepare_dataset([{path!r}], tok, DataSettings(seq_len=512, pack={pack}), GoldfishConfig(), num_proc={num_proc},
                    progress=False, cache={cache!r})
print(json.dumps({{"tokens": p.counts["input_tokens"], "seconds": time.time() - start, "reused": p.reused}}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes-mb", type=int, nargs="+", default=[50, 200, 1000])
    ap.add_argument("--num-proc", type=int, default=2)
    ap.add_argument("--pack", action="store_true")
    ap.add_argument("--keep", help="work folder to keep (default: a temp folder, removed)")
    args = ap.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="bench_data."))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for mb in args.sizes_mb:
        corpus = work / f"corpus-{mb}mb.jsonl"
        docs = write_corpus(corpus, mb)
        plain, plain_rss = run_measured(PLAIN.format(path=str(corpus)))
        code = PREPARE.format(path=str(corpus), pack=args.pack, num_proc=args.num_proc, cache=str(work / f"cache-{mb}"))
        first, first_rss = run_measured(code)
        second, _ = run_measured(code)
        assert not first["reused"] and second["reused"] and first["tokens"] == plain["tokens"]
        rows.append((mb, docs, plain["tokens"], plain["tokens"] / plain["seconds"], first["tokens"] / first["seconds"],
                     first_rss, plain_rss, first["seconds"], second["seconds"]))
        print(f"{mb} MB done: {rows[-1]}", file=sys.stderr, flush=True)
    print(f"\nprepare: num_proc={args.num_proc}, seq_len 512, pack={args.pack}; plain: tokenizer(batch of 1000) in one process\n")
    print("| corpus | docs | tokens | plain tok/s | prepare tok/s | prepare ÷ plain | prepare peak RSS | plain peak RSS | first run | cached run | cached ÷ first |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for mb, docs, tokens, plain_tps, prep_tps, rss, plain_rss, t1, t2 in rows:
        print(f"| {mb} MB | {docs} | {tokens / 1e6:.1f} M | {plain_tps / 1e3:.0f} k | {prep_tps / 1e3:.0f} k | {prep_tps / plain_tps:.2f}× "
              f"| {rss:.0f} MiB | {plain_rss:.0f} MiB | {t1:.1f} s | {t2:.1f} s | {t2 / t1:.3f} |")
    if len(rows) > 1:
        print(f"\nRSS growth {rows[-2][0]} MB -> {rows[-1][0]} MB: {rows[-1][5] / rows[-2][5]:.2f}×")
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
