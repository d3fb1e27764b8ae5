"""Goldfish drop masks: which targets the loss leaves out.

Conventions (HF): ``labels`` are aligned with ``input_ids`` and the model shifts inside, so the
target at position i is token x_i and its context is the tokens before it *in the same document*.
Every function takes a torch tensor (any device; result on that device) or a NumPy array (result
NumPy) of shape (T,) or (B, T). ``hash`` and ``static`` compute natively on both with the same
integer/float64 arithmetic; ``random`` and ``paper-table`` are defined by torch generators, so
NumPy input goes through torch on the CPU.

Document boundaries (a context never crosses one): ``goldfish.documents``, from position_ids,
doc_ids, attention_mask or cu_seqlens, and always at t = 0 of each row.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from goldfish.config import GoldfishConfig
from goldfish.documents import document_starts, last_start_index, position_in_document
from goldfish.hashing import context_hashes
from goldfish.protect import protected_drops

PAPER_TABLE_SIZE = 1_000_003
PAPER_TABLE_SEED = 2971215073
_TWO32 = 4294967296.0


def _is_torch(x) -> bool:
    return isinstance(x, torch.Tensor)


def _check_ids(input_ids):
    if not isinstance(input_ids, (torch.Tensor, np.ndarray)):
        raise ValueError(
            f"input_ids must be a torch.Tensor or numpy.ndarray, got {type(input_ids).__name__}; "
            "wrap lists with torch.tensor(...)"
        )
    if input_ids.ndim not in (1, 2):
        raise ValueError(f"input_ids must have shape (T,) or (B, T), got {tuple(input_ids.shape)}")
    integer = (
        not input_ids.dtype.is_floating_point and not input_ids.dtype.is_complex and input_ids.dtype != torch.bool
        if _is_torch(input_ids)
        else np.issubdtype(input_ids.dtype, np.integer)
    )
    if not integer:
        raise ValueError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}; cast with .long()")
    if input_ids.numel() if _is_torch(input_ids) else input_ids.size:
        lo, hi = (int(v) for v in ((input_ids.min(), input_ids.max())))
        if lo < 0 or hi >= 2**32:
            raise ValueError(
                f"token ids must lie in [0, 2**32), found {lo if lo < 0 else hi}; "
                "pass the real token ids (padding too), not labels with -100"
            )


def _check_like(name, value, input_ids):
    if value is None:
        return None
    if tuple(value.shape) != tuple(input_ids.shape):
        raise ValueError(f"{name} has shape {tuple(value.shape)} but input_ids has {tuple(input_ids.shape)}")
    if _is_torch(input_ids):
        return torch.as_tensor(value, device=input_ids.device)
    return np.asarray(value.cpu() if _is_torch(value) else value)


def _thresholds(cfg: GoldfishConfig, token_k, like):
    """Integer drop thresholds floor(2**32 / k) (scalar, or per token where token_k is given)."""
    if token_k is None:
        return int(math.floor(_TWO32 / cfg.k))
    if _is_torch(like):
        return torch.floor(_TWO32 / token_k.to(torch.float64)).to(torch.int64)
    return np.floor(_TWO32 / token_k.astype(np.float64)).astype(np.int64)


def _hash_mask(input_ids, starts, cfg, token_k, aligned):
    ctx = position_in_document(starts)
    if _is_torch(input_ids):
        ids, ctx = input_ids.long(), torch.clamp(ctx, max=cfg.h)
    else:
        ids, ctx = input_ids.astype(np.int64), np.minimum(ctx, cfg.h)
    hashes = context_hashes(ids, ctx, cfg.h, cfg.seed)
    if aligned is not None:  # goldfish-align-v1: a representative's hash where one is given
        aligned = aligned.long() if _is_torch(aligned) else aligned.astype(np.int64)
        hashes = torch.where(aligned >= 0, aligned, hashes) if _is_torch(aligned) else np.where(aligned >= 0, aligned, hashes)
    return hashes < _thresholds(cfg, token_k, input_ids)


def _static_mask(input_ids, starts, cfg, token_k, supervised):
    """Drop the n-th supervised target of a document iff floor(n/k) > floor((n-1)/k) (every k-th)."""
    if _is_torch(input_ids):
        sup = supervised.to(torch.int64)
        count = torch.cumsum(sup, dim=-1)
        before_doc = torch.gather(count - sup, -1, last_start_index(starts))
        n = (count - before_doc).to(torch.float64)
        k = cfg.k if token_k is None else token_k.to(torch.float64)
        return supervised & (torch.floor(n / k) > torch.floor((n - 1) / k))
    sup = supervised.astype(np.int64)
    count = np.cumsum(sup, axis=-1)
    before_doc = np.take_along_axis(count - sup, last_start_index(starts), axis=-1)
    n = (count - before_doc).astype(np.float64)
    k = cfg.k if token_k is None else token_k.astype(np.float64)
    return supervised & (np.floor(n / k) > np.floor((n - 1) / k))


def _random_mask(input_ids, cfg, token_k, generator):
    device = input_ids.device if _is_torch(input_ids) else "cpu"
    if generator is not None:
        device = generator.device
    u = torch.rand(tuple(input_ids.shape), generator=generator, dtype=torch.float64, device=device)
    k = cfg.k if token_k is None else torch.as_tensor(token_k, device=device, dtype=torch.float64)
    return (u < 1.0 / k).to(input_ids.device) if _is_torch(input_ids) else (u < 1.0 / k).numpy()


@lru_cache(maxsize=1)
def paper_table() -> torch.Tensor:
    """The paper code's table: torch.rand(1_000_003) from a CPU generator seeded 2971215073.

    The official code drew it on the training device; a CUDA generator gives other values, so runs
    made on GPUs used a different table. This is the CPU table, moved to the input's device.
    """
    gen = torch.Generator(device="cpu").manual_seed(PAPER_TABLE_SEED)
    return torch.rand(PAPER_TABLE_SIZE, generator=gen)


@lru_cache(maxsize=8)
def _paper_table_on(device: str) -> torch.Tensor:
    return paper_table().to(device)


def _paper_table_mask(input_ids, starts, cfg, token_k):
    """The official rule: key = (int64 product of the h ids ending at the target, wrapping in two's
    complement) mod 1,000,003 (non-negative); drop where paper_table()[key] < 1/k; the first h-1
    targets of a document are never dropped (there the window is not full)."""
    ids = torch.as_tensor(input_ids).long()  # NumPy input: the same integer ops on the CPU
    starts = torch.as_tensor(starts, device=ids.device)
    prod = ids.clone()
    for d in range(1, min(cfg.h, ids.shape[-1])):
        prod = prod * torch.nn.functional.pad(ids[..., : ids.shape[-1] - d], (d, 0))  # int64: wraps like the official code
    key = torch.remainder(prod, PAPER_TABLE_SIZE)
    k = cfg.k if token_k is None else torch.as_tensor(token_k, device=ids.device).to(torch.float64)
    table = _paper_table_on(str(ids.device))
    drop = (table[key].to(torch.float64) < 1.0 / k) & (position_in_document(starts) >= cfg.h - 1)
    return drop if _is_torch(input_ids) else drop.numpy()


def goldfish_mask(
    input_ids,
    cfg: GoldfishConfig,
    position_ids=None,
    doc_ids=None,
    *,
    attention_mask=None,
    cu_seqlens=None,
    labels=None,
    token_k=None,
    protected=None,
    aligned=None,
    generator: torch.Generator | None = None,
):
    """Bool mask, same shape/type/device as ``input_ids``: True = the target at that position is dropped.

    labels: optional; only "static" reads it (it counts supervised targets, label != ignore_index).
        Other strategies decide for every position; ignored positions stay ignored downstream anyway.
    token_k: optional per-token k (float, same shape), overriding cfg.k; ``inf`` means never drop
        (a document that opts out). Values must be >= 2 or inf.
    protected: optional per-token marker (int or bool, same shape): 0/False = not protected, else the
        number of the protected span the token belongs to. Protected targets follow the rule
        goldfish-protect-v1 at rate 1/cfg.protect_k (``goldfish.protect``), whatever the strategy.
    aligned: optional per-token int64 (same shape), the ``goldfish_aligned`` column of
        goldfish-align-v1 (``goldfish.align``): where >= 0, that hash replaces the position's own
        hash-v1 hash in the threshold test (with the position's own k); -1 keeps its own. "hash" only.
        Protected targets still follow goldfish-protect-v1.
    generator: torch generator for "random" (default: torch's global RNG on the input's device).
    """
    _check_ids(input_ids)
    position_ids = _check_like("position_ids", position_ids, input_ids)
    doc_ids = _check_like("doc_ids", doc_ids, input_ids)
    attention_mask = _check_like("attention_mask", attention_mask, input_ids)
    labels = _check_like("labels", labels, input_ids)
    token_k = _check_like("token_k", token_k, input_ids)
    protected = _check_like("protected", protected, input_ids)
    aligned = _check_like("aligned", aligned, input_ids)
    if aligned is not None and cfg.strategy != "hash" and bool((aligned >= 0).any()):
        raise ValueError(f"aligned hashes (goldfish-align-v1) replace hash-v1 hashes: they need strategy 'hash', not {cfg.strategy!r}")
    if token_k is not None and bool((token_k < 2).any()):
        raise ValueError("token_k values must be >= 2 (drop rate 1/k) or inf (never drop)")
    starts = document_starts(input_ids, position_ids, doc_ids, attention_mask, cu_seqlens)
    drop = _strategy_mask(input_ids, starts, cfg, token_k, labels, aligned, generator)
    if protected is None or not bool((protected != 0).any()):
        return drop
    inside = protected != 0
    return (drop & ~inside) | protected_drops(input_ids, protected, starts, cfg.protect_k, cfg.h, cfg.seed)


def _strategy_mask(input_ids, starts, cfg, token_k, labels, aligned, generator):
    if cfg.strategy == "none":
        return torch.zeros_like(input_ids, dtype=torch.bool) if _is_torch(input_ids) else np.zeros(input_ids.shape, bool)
    if cfg.strategy == "hash":
        return _hash_mask(input_ids, starts, cfg, token_k, aligned)
    if cfg.strategy == "static":
        supervised = labels != cfg.ignore_index if labels is not None else starts | True
        return _static_mask(input_ids, starts, cfg, token_k, supervised)
    if cfg.strategy == "random":
        return _random_mask(input_ids, cfg, token_k, generator)
    return _paper_table_mask(input_ids, starts, cfg, token_k)


def apply_goldfish(labels, input_ids, cfg: GoldfishConfig, position_ids=None, doc_ids=None, **mask_kwargs):
    """A copy of ``labels`` with dropped targets set to ``cfg.ignore_index``.

    Positions already equal to ignore_index stay ignored; the hash still reads their token ids, so
    prompt tokens feed the context of the reply that follows. ``mask_kwargs`` go to goldfish_mask.
    """
    if tuple(labels.shape) != tuple(input_ids.shape):
        raise ValueError(f"labels has shape {tuple(labels.shape)} but input_ids has {tuple(input_ids.shape)}")
    drop = goldfish_mask(input_ids, cfg, position_ids, doc_ids, labels=labels, **mask_kwargs)
    if _is_torch(labels):
        return labels.masked_fill(drop.to(labels.device), cfg.ignore_index)
    return np.where(drop, cfg.ignore_index, labels).astype(labels.dtype)
