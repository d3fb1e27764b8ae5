"""Document boundaries, shared by every mask rule: a context never crosses one.

Every function takes a torch tensor (any device; result on that device) or a NumPy array (result
NumPy) of shape (T,) or (B, T). A document starts, from whichever is given:
    position_ids    where position_ids[t] != position_ids[t-1] + 1 (HF packing resets to 0; left
                    padding in HF gives pads their own segments)
    doc_ids         where the id changes
    attention_mask  at the first attended token after an unattended one (and at every unattended one)
    cu_seqlens      at each cumulative document length of a flattened (T,) or (1, T) row (flash-attn style)
and always at t = 0 of each row.
"""

from __future__ import annotations

import numpy as np
import torch


def document_starts(input_ids, position_ids=None, doc_ids=None, attention_mask=None, cu_seqlens=None):
    """Bool, the shape of ``input_ids``: True where a document starts (module docstring). The other
    arguments must have that shape and input_ids' kind (torch on its device, or NumPy)."""
    like = input_ids
    if isinstance(like, torch.Tensor):
        starts = torch.zeros(like.shape, dtype=torch.bool, device=like.device)
    else:
        starts = np.zeros(like.shape, dtype=bool)
    starts[..., 0] = True
    if position_ids is not None:
        starts[..., 1:] |= position_ids[..., 1:] != position_ids[..., :-1] + 1
    if doc_ids is not None:
        starts[..., 1:] |= doc_ids[..., 1:] != doc_ids[..., :-1]
    if attention_mask is not None:
        attended = attention_mask != 0
        starts[..., 1:] |= attended[..., 1:] & ~attended[..., :-1]
        starts |= ~attended
    if cu_seqlens is not None:
        if like.ndim == 2 and like.shape[0] != 1:
            raise ValueError("cu_seqlens describes one flattened row: input_ids must be (T,) or (1, T)")
        offsets = [int(o) for o in cu_seqlens]
        if offsets[0] != 0 or offsets != sorted(offsets) or offsets[-1] > like.shape[-1]:
            raise ValueError(f"cu_seqlens must rise from 0 to at most the row length {like.shape[-1]}, got {offsets}")
        for o in offsets[:-1]:
            starts[..., o] = True
    return starts


def last_start_index(starts):
    """int64, the shape of ``starts`` (bool, True at t = 0 of each row): for each position, the index
    (along the last axis) of the nearest start at or before it."""
    if isinstance(starts, torch.Tensor):
        idx = torch.arange(starts.shape[-1], device=starts.device).expand(starts.shape)
        return torch.cummax(torch.where(starts, idx, torch.zeros_like(idx)), dim=-1).values
    idx = np.broadcast_to(np.arange(starts.shape[-1]), starts.shape)
    return np.maximum.accumulate(np.where(starts, idx, 0), axis=-1)


def position_in_document(starts):
    """int64, the shape of ``starts``: how many tokens of the same document precede each position."""
    if isinstance(starts, torch.Tensor):
        return torch.arange(starts.shape[-1], device=starts.device) - last_start_index(starts)
    return np.arange(starts.shape[-1]) - last_start_index(starts)
