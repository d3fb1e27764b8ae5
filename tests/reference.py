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


# goldfish-align-v1 (goldfish.align's spec), pure Python
ALIGN_MIN_TOKENS, ALIGN_SHINGLE, ALIGN_PERM, ALIGN_BANDS, ALIGN_MAX_REPS = 16, 3, 64, 16, 64
SHINGLE_SEED, MINHASH_SALT = 0x53484E47, 0x4D494E48


def ref_lcs_table(b: list, a: list) -> list[list[int]]:
    """L[j][i]: the LCS length of b[:j] and a[:i]."""
    table = [[0] * (len(a) + 1) for _ in range(len(b) + 1)]
    for j in range(1, len(b) + 1):
        for i in range(1, len(a) + 1):
            table[j][i] = table[j - 1][i - 1] + 1 if b[j - 1] == a[i - 1] else max(table[j - 1][i], table[j][i - 1])
    return table


def ref_alignment(r: list, p: list) -> list[tuple[int, int]]:
    """(position in r, position in p) of every matched pair, by the spec's walk."""
    pre = 0
    while pre < min(len(r), len(p)) and r[pre] == p[pre]:
        pre += 1
    suf = 0
    while suf < min(len(r), len(p)) - pre and r[len(r) - 1 - suf] == p[len(p) - 1 - suf]:
        suf += 1
    a, b = r[pre : len(r) - suf], p[pre : len(p) - suf]
    table = ref_lcs_table(b, a)
    pairs = [(t, t) for t in range(pre)] + [(len(r) - suf + t, len(p) - suf + t) for t in range(suf)]
    i, j = len(a), len(b)
    while i > 0 and j > 0:
        if table[j][i] == table[j][i - 1]:
            i -= 1
        else:
            j -= 1
            if not (j > 0 and table[j][i] > table[j][i - 1]):
                pairs.append((pre + i - 1, pre + j))
                i -= 1
    return sorted(pairs)


def ref_aligned(examples: list[tuple[list[int], list[int]]], h: int, seed: int, ignore_index: int = -100) -> list[list[int]]:
    """The ``goldfish_aligned`` column of each example (ids, labels) of a training set."""
    found = []  # (example, a, e)
    for n, (_, labels) in enumerate(examples):
        t = 0
        while t < len(labels):
            if labels[t] == ignore_index:
                t += 1
                continue
            e = t
            while e < len(labels) and labels[e] != ignore_index:
                e += 1
            if e - t >= ALIGN_MIN_TOKENS:
                found.append((n, t, e))
            t = e
    tokens = [examples[n][0][a:e] for n, a, e in found]
    lead = [examples[n][0][max(0, a - h) : a] for n, a, e in found]
    salts = [ref_mix32(MINHASH_SALT ^ (((q + 1) * 0x9E3779B9) & M32)) for q in range(ALIGN_PERM)]
    sigs = []
    for p in tokens:
        shingles = [ref_hash(SHINGLE_SEED, p[i : i + ALIGN_SHINGLE]) for i in range(len(p) - ALIGN_SHINGLE + 1)]
        sigs.append([min(ref_mix32(g ^ s) for g in shingles) for s in salts])
    parent = list(range(len(found)))

    def root(x):
        while parent[x] != x:
            x = parent[x]
        return x

    rows = ALIGN_PERM // ALIGN_BANDS
    for x in range(len(found)):
        for y in range(x):
            if any(sigs[x][rows * b : rows * (b + 1)] == sigs[y][rows * b : rows * (b + 1)] for b in range(ALIGN_BANDS)):
                parent[root(x)] = root(y)
    out = [[-1] * len(ids) for ids, _ in examples]
    for comp in {root(x) for x in range(len(found))}:
        members = [x for x in range(len(found)) if root(x) == comp]
        copies = {}
        for x in members:
            copies[tuple(tokens[x])] = copies.get(tuple(tokens[x]), 0) + 1
        order = sorted(members, key=lambda x: (-copies[tuple(tokens[x])], tokens[x], lead[x]))
        placed = set()
        for _ in range(ALIGN_MAX_REPS):
            free = [x for x in order if x not in placed]
            if not free:
                break
            rep = free[0]
            cluster = [rep] + [x for x in free[1:]
                               if 10 * ref_lcs_table(tokens[x], tokens[rep])[-1][-1] >= 3 * (len(tokens[x]) + len(tokens[rep]))]
            placed.update(cluster)
            if len(cluster) == 1:
                continue
            rn, ra, _ = found[rep]
            rids = examples[rn][0]
            for x in cluster[1:]:
                n, a, _ = found[x]
                for s, c in ref_alignment(tokens[rep], tokens[x]):
                    out[n][a + c] = ref_hash(seed, rids[max(0, ra + s - h) : ra + s])
    return out


def ref_rule_logprob(logits: list[float], token: int, temperature: float, top_k: int | None, top_p: float) -> float:
    """log p(token) under sampling with temperature, then top-k, then top-p, by hand (HF's semantics):
    top-k keeps every logit >= the k-th largest; top-p walks the kept tokens from the most likely and
    keeps each one while the mass before it is < top_p (so at least one); -inf when dropped."""
    import math

    z = [x / temperature for x in logits]
    keep = list(range(len(z)))
    if top_k is not None:
        kth = sorted(z, reverse=True)[min(top_k, len(z)) - 1]
        keep = [i for i in keep if z[i] >= kth]
    if top_p < 1.0:
        top = max(z[i] for i in keep)
        total = sum(math.exp(z[i] - top) for i in keep)
        kept, mass = [], 0.0
        for i in sorted(keep, key=lambda i: -z[i]):
            if kept and mass >= top_p:
                break
            kept.append(i)
            mass += math.exp(z[i] - top) / total
        keep = kept
    if token not in keep:
        return -math.inf
    top = max(z[i] for i in keep)
    return z[token] - top - math.log(sum(math.exp(z[i] - top) for i in keep))


def ref_log_p_exact(model, prefix: list[int], suffix: list[int], temperature: float, top_k: int | None, top_p: float) -> float:
    """Natural log of the probability that one sample after ``prefix`` is ``suffix``: the model run on
    this one sequence, then a Python loop over the suffix positions."""
    import torch

    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prefix + suffix])).logits[0].double().tolist()
    return sum(ref_rule_logprob(logits[len(prefix) - 1 + t], tok, temperature, top_k, top_p) for t, tok in enumerate(suffix))
