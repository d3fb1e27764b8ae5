"""The context hash "goldfish-hash-v1": identical bits on torch (CPU, CUDA) and NumPy.

Spec (all values unsigned 32-bit, ``mul32(a, c) = a * c mod 2**32``)::

    mix32(x):  x ^= x >> 16; x = mul32(x, 0x7FEB352D); x ^= x >> 15; x = mul32(x, 0x5BD1E995); x ^= x >> 16
    hash(seed, t_1 .. t_c):                       # context ids, oldest first, 0 <= c <= h
        s = mix32(seed ^ mul32(c + 1, 0x9E3779B9))
        for t in t_1 .. t_c:  s = mix32(s ^ t)
        return s

The rule is order-sensitive (every step is a bijection of the running state followed by mixing), it
mixes in the context length (a short context at a document start never collides with a full one by
construction), and it never looks at the target's position. Both mixing multipliers are odd and
below 2**31, so on int64 tensors or arrays every product of a 32-bit state stays below 2**63: no
backend ever overflows, and torch CPU, torch CUDA and NumPy produce the same bits. Changing anything here changes every user's
masks: bump HASH_VERSION if you must.
"""

from __future__ import annotations

import numpy as np
import torch

HASH_VERSION = "goldfish-hash-v1"
MASK32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9


def mix32(x):
    """The 32-bit finaliser of the spec; a bijection on [0, 2**32) (int64 tensors/arrays or ints)."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & MASK32
    x = x ^ (x >> 15)
    x = (x * 0x5BD1E995) & MASK32
    return x ^ (x >> 16)


def _shift_right(x, d: int):
    """x shifted d places to the right along the last axis, zero-filled (d <= length)."""
    if isinstance(x, torch.Tensor):
        return torch.nn.functional.pad(x[..., : x.shape[-1] - d], (d, 0))
    return np.pad(x[..., : x.shape[-1] - d], [(0, 0)] * (x.ndim - 1) + [(d, 0)])


def _where(cond, a, b):
    return torch.where(cond, a, b) if isinstance(cond, torch.Tensor) else np.where(cond, a, b)


def context_hashes(ids, context_len, h: int, seed: int):
    """goldfish-hash-v1 of each target's context.

    ids: int64 token ids in [0, 2**32), shape (..., T), torch tensor or NumPy array.
    context_len: int64, same shape, values in [0, h]: how many tokens before position i (in its
        document) form its context.
    Returns int64 hashes in [0, 2**32), same shape, type and device as ``ids``.
    """
    s = mix32((((context_len + 1) * _GOLDEN) & MASK32) ^ seed)  # context_len + 1 <= h + 1: no overflow
    for d in range(min(h, ids.shape[-1]), 0, -1):  # oldest context token first
        s = _where(context_len >= d, mix32(s ^ _shift_right(ids, d)), s)
    return s
