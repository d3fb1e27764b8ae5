"""Slow pure-Python references of the mask rules, written from the spec, independent of the package."""

M32 = 0xFFFFFFFF


def ref_mix32(x: int) -> int:
    x ^= x >> 16
    x = (x * 0x7FEB352D) & M32
    x ^= x >> 15
    x = (x * 0x5BD1E995) & M32
    x ^= x >> 16
    return x


def ref_hash(seed: int, context: list[int]) -> int:
    s = ref_mix32(seed ^ (((len(context) + 1) * 0x9E3779B9) & M32))
    for t in context:
        s = ref_mix32(s ^ t)
    return s


def ref_documents(n: int, doc_ids=None) -> list[int]:
    """Start index of the document of each position."""
    starts, cur = [], 0
    for i in range(n):
        if i > 0 and doc_ids is not None and doc_ids[i] != doc_ids[i - 1]:
            cur = i
        starts.append(cur)
    return starts


def ref_hash_mask(ids: list[int], k: float, h: int, seed: int, doc_ids=None) -> list[bool]:
    threshold = int(4294967296.0 / k)
    starts = ref_documents(len(ids), doc_ids)
    out = []
    for i in range(len(ids)):
        context = ids[max(starts[i], i - h) : i]
        out.append(ref_hash(seed, context) < threshold)
    return out


def ref_paper_table_mask(ids: list[int], k: float, h: int, table: list[float]) -> list[bool]:
    """The paper code's table rule on one row: the product of the h ids ending at the target, as a
    signed int64 that wraps (two's complement), taken mod 1,000,003 (non-negative, Python's %)."""
    out = []
    for i in range(len(ids)):
        if i < h - 1:
            out.append(False)
            continue
        prod = 1
        for t in ids[i - h + 1 : i + 1]:
            prod *= t
        prod %= 2**64
        if prod >= 2**63:
            prod -= 2**64
        out.append(table[prod % 1_000_003] < 1 / k)
    return out


PROTECT_SALT = 0x50524F54


def ref_protect_mask(ids: list[int], marker: list[int], protect_k: float, h: int, seed: int, doc_ids=None) -> list[bool]:
    """goldfish-protect-v1 on one row, from the README's spec: True where a protected target drops."""
    threshold = int(2**32 // protect_k)
    doc = ref_documents(len(ids), doc_ids)
    runs, i = [], 0
    while i < len(ids):
        if marker[i] == 0:
            i += 1
            continue
        j = i + 1
        while j < len(ids) and marker[j] == marker[i] and doc[j] == doc[i]:
            j += 1
        runs.append((i, j))
        i = j
    out = [False] * len(ids)
    for s, e in runs:
        hashes = {}
        for i in range(s, e):
            window = [ids[s]] if i == s else ids[max(s + 1, i - h + 1) : i + 1]
            hashes[i] = ref_hash(seed ^ PROTECT_SALT, window)
            out[i] = hashes[i] < threshold
        candidates = list(range(s + 1, e)) if e - s > 1 else [s]
        if not any(out[c] for c in candidates):
            out[min(candidates, key=lambda c: (hashes[c], c))] = True
    return out
