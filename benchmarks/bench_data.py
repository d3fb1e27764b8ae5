"""Data preparation at scale: ``goldfish.data.prepare`` (datasets, batched maps, num_proc, cache) vs
plain batched fast tokenization of the same texts, peak RSS against corpus size, the cached run
(which hashes the source and checks the cache entry) and the content hash alone.

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


def _status_mib(pid: int) -> tuple[float, float]:
    """(RSS, anonymous RSS) of one process in MiB, from /proc/PID/status."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "RssAnon:")):
                values[line.split(":")[0]] = int(line.split()[1]) / 1024
    return values.get("VmRSS", 0.0), values.get("RssAnon", 0.0)


def tree_rss_mib(pid: int) -> tuple[float, float]:
    """(RSS, anonymous RSS) of a process and all its descendants (MiB), from /proc. Anonymous memory
    is what the program holds; the rest of RSS is file pages it has mapped (Arrow files), which the
    kernel can drop."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    children.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(int(d))
            except (OSError, IndexError):
                continue
    total = anon = 0.0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            rss, a = _status_mib(p)
        except OSError:
            continue
        total, anon = total + rss, anon + a
        todo += children.get(p, [])
    return total, anon


def run_measured(code: str) -> tuple[dict, tuple[float, float]]:
    """Run python code in a subprocess (it prints one JSON line last); returns (that JSON, peak tree
    (RSS, anonymous RSS) in MiB)."""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    peak = [0.0, 0.0]

    def sample():
        while proc.poll() is None:
            rss, anon = tree_rss_mib(proc.pid)
            peak[0], peak[1] = max(peak[0], rss), max(peak[1], anon)
            time.sleep(0.1)

    t = threading.Thread(target=sample)
    t.start()
    out, _ = proc.communicate()
    t.join()
    if proc.returncode:
        raise SystemExit(f"subprocess failed ({proc.returncode})")
    return json.loads(out.strip().splitlines()[-1]), (peak[0], peak[1])


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

HASH = """
import json, time
from goldfish.data.sources import source_identity
start = time.time()
source_identity({path!r})
print(json.dumps({{"seconds": time.time() - start}}))
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
        hashed, _ = run_measured(HASH.format(path=str(corpus)))
        assert not first["reused"] and second["reused"] and first["tokens"] == plain["tokens"]
        rows.append((mb, docs, plain["tokens"], plain["tokens"] / plain["seconds"], first["tokens"] / first["seconds"],
                     first_rss, plain_rss[0], first["seconds"], second["seconds"], hashed["seconds"]))
        print(f"{mb} MB done: {rows[-1]}", file=sys.stderr, flush=True)
    print(f"\nprepare: num_proc={args.num_proc}, seq_len 512, pack={args.pack}; plain: tokenizer(batch of 1000) in one process\n")
    print("| corpus | docs | tokens | plain tok/s | prepare tok/s | prepare ÷ plain | prepare peak RSS (anonymous) | plain peak RSS "
          "| first run | cached run | cached ÷ first | sha256 of the source |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for mb, docs, tokens, plain_tps, prep_tps, (rss, anon), plain_rss, t1, t2, th in rows:
        print(f"| {mb} MB | {docs} | {tokens / 1e6:.1f} M | {plain_tps / 1e3:.0f} k | {prep_tps / 1e3:.0f} k | {prep_tps / plain_tps:.2f}× "
              f"| {rss:.0f} MiB ({anon:.0f} MiB) | {plain_rss:.0f} MiB | {t1:.1f} s | {t2:.1f} s | {t2 / t1:.3f} | {th:.2f} s |")
    if len(rows) > 1:
        (a, a_anon), (b, b_anon) = rows[0][5], rows[-1][5]
        print(f"\npeak RSS growth {rows[0][0]} MB -> {rows[-1][0]} MB: {b / a:.2f}× (anonymous: {b_anon / a_anon:.2f}×)")
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
