"""Protected spans, rule "goldfish-protect-v1": a secret's drops depend on its own tokens only.

The goldfish hash reads the h tokens *before* a target, so a secret that recurs after different
text (a phone number opening replies to varied questions, a name signed under varied sentences)
gets different drops in each place, and together the places teach every token. Inside a protected
span the decision instead reads the span's own tokens, so the same secret loses the same tokens
wherever it stands, at a stronger rate ``protect_k``.

A *marker* (same shape as the token ids) holds 0 for an unprotected token and a span number (1, 2,
...) for a protected one; a token is protected iff its characters overlap a protected character
range (``token_marker``). A *run* is a maximal stretch of one document with the same non-zero
marker. Spec, for a run at positions s .. e-1 with token ids t_i (``hash`` is goldfish-hash-v1 of
``goldfish.hashing``, with seed ``seed ^ PROTECT_SALT``)::

    window(i) = [t_s]                            if i == s
              = t_max(s+1, i-h+1) .. t_i         otherwise: up to h tokens ending at the target,
                                                 never the run's first token
    drop i  iff  hash(seed ^ PROTECT_SALT, window(i)) < floor(2**32 / protect_k)
    at least one drop: the candidates are s+1 .. e-1 (s alone for a one-token run); if none of them
    is dropped, the candidate with the smallest hash (the first on ties) is dropped.

The run's first token stays out of every other window and of the guarantee because that is where
tokenization at the span's edge differs (" Dana" after a space, "Dana" at a line start): a secret's
interior gets identical drops in every context. ``protect_k = 1`` drops every protected target.
A protected target follows this rule whatever the strategy (``none`` included) and whatever its
``goldfish_k`` (a document that opts out of goldfish still protects its secrets).
"""

from __future__ import annotations

import numpy as np
import torch

from goldfish.hashing import context_hashes
from goldfish.documents import last_start_index

PROTECT_VERSION = "goldfish-protect-v1"
PROTECT_SALT = 0x50524F54  # "PROT": protected windows never share hashes with ordinary contexts


def token_marker(offsets, spans) -> list[int]:
    """Per token, 0 or the number (from 1) of the protected character range it overlaps.

    offsets: the tokenizer's (start, end) character offsets; zero-width tokens (special tokens) are
    never protected. spans: (start, end) character ranges. Ranges whose tokens overlap (or share a
    token) become one span.
    """
    token_ranges = []
    for a, b in sorted(spans):
        hit = [t for t, (x, y) in enumerate(offsets) if y > x and x < b and y > a]
        if hit:
            token_ranges.append([hit[0], hit[-1]])
    merged: list[list[int]] = []
    for lo, hi in sorted(token_ranges):
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    marker = [0] * len(offsets)
    for n, (lo, hi) in enumerate(merged, 1):
        for t in range(lo, hi + 1):
            if offsets[t][1] > offsets[t][0]:
                marker[t] = n
    return marker


def protected_drops(input_ids, marker, starts, protect_k: float, h: int, seed: int):
    """Bool drop decisions of goldfish-protect-v1 (module docstring): True only on dropped protected
    positions. ``starts``: document starts (bool, same shape). Torch in, torch out (same device);
    NumPy in, NumPy out (computed with torch on the CPU)."""
    as_numpy = not isinstance(input_ids, torch.Tensor)
    ids = torch.as_tensor(np.asarray(input_ids) if as_numpy else input_ids).long()
    marker = torch.as_tensor(marker, device=ids.device).long()
    starts = torch.as_tensor(starts, device=ids.device)
    prot = marker != 0
    prev = torch.nn.functional.pad(marker[..., :-1], (1, 0))
    run_start = prot & (starts | (marker != prev))
    offset = torch.arange(ids.shape[-1], device=ids.device) - last_start_index(run_start)
    window = torch.where(offset == 0, torch.ones_like(offset), torch.clamp(offset, max=h))
    # the hash of the window ending at i is the v1 hash of the context of position i + 1
    ext_ids = torch.nn.functional.pad(ids, (0, 1))
    ext_len = torch.nn.functional.pad(window, (1, 0))
    hashes = context_hashes(ext_ids, ext_len, h, seed ^ PROTECT_SALT)[..., 1:]
    drop = prot & (hashes < int(2**32 // protect_k))

    follows = prot & ~run_start  # continues a run
    continued = torch.nn.functional.pad(follows[..., 1:], (0, 1))
    candidate = follows | (run_start & ~continued)
    run = torch.cumsum(run_start.reshape(-1).long(), 0) - 1  # run number of each position (flattened)
    n_runs = int(run_start.sum())
    if n_runs:
        flat_cand, flat_drop, flat_hash = candidate.reshape(-1), drop.reshape(-1), hashes.reshape(-1)
        runs = run[flat_cand]
        has_drop = torch.zeros(n_runs, dtype=torch.long, device=ids.device).index_add_(0, runs, flat_drop[flat_cand].long()) > 0
        least = torch.full((n_runs,), 2**32, dtype=torch.long, device=ids.device).scatter_reduce(0, runs, flat_hash[flat_cand], "amin")
        position = torch.arange(flat_cand.numel(), device=ids.device)
        of_run = run.clamp(min=0)  # an index for every position; only candidates' values are used
        chosen = flat_cand & ~has_drop[of_run] & (flat_hash == least[of_run])
        first = torch.full((n_runs,), flat_cand.numel(), dtype=torch.long, device=ids.device).scatter_reduce(
            0, run[chosen], position[chosen], "amin")
        guaranteed = chosen & (position == first[of_run])
        drop = drop | guaranteed.reshape(drop.shape)
    return drop.cpu().numpy() if as_numpy else drop
