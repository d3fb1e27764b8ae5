"""The goldfish loss: mean cross-entropy over the kept ("supervised") targets only.

    L = -(1/|G|) * sum_{i in G} log p(x_i | x_<i)

G is the set of targets whose label is not ignore_index after the goldfish mask. With
``num_items_in_batch`` (HF Trainer's count of supervised targets in the whole global batch) the sum
is divided by that instead, so gradient accumulation and DDP average over the global batch. When G
is empty the loss is 0 with zero gradient (never NaN) and still part of the autograd graph, so
DDP/FSDP gradient synchronisation runs as usual.
"""

from __future__ import annotations

import contextlib
import logging

import torch
import torch.nn.functional as F

from goldfish.config import GoldfishConfig
from goldfish.mask import apply_goldfish

logger = logging.getLogger("goldfish")


def _normalise(total: torch.Tensor, count, num_items_in_batch) -> torch.Tensor:
    if num_items_in_batch is not None:
        count = num_items_in_batch
    if isinstance(count, torch.Tensor):
        return total / count.to(total.device).clamp(min=1)
    return total / max(int(count), 1)


def causal_lm_loss(logits, labels, ignore_index: int = -100, num_items_in_batch=None) -> torch.Tensor:
    """Shifted causal-LM cross-entropy (HF convention): logits[:, i] predicts labels[:, i + 1].

    Sum over targets != ignore_index, divided by their count (or by num_items_in_batch), in fp32.
    """
    shift_logits = logits[..., :-1, :].reshape(-1, logits.shape[-1]).float()
    shift_labels = labels[..., 1:].reshape(-1).to(shift_logits.device)
    total = F.cross_entropy(shift_logits, shift_labels, ignore_index=ignore_index, reduction="sum")
    return _normalise(total, (shift_labels != ignore_index).sum(), num_items_in_batch)


def goldfish_loss(
    logits, labels, input_ids, cfg: GoldfishConfig, position_ids=None, num_items_in_batch=None, **mask_kwargs
) -> torch.Tensor:
    """Goldfish loss from full logits (B, T, V): mask the labels, then ``causal_lm_loss``.

    ``mask_kwargs`` (doc_ids, attention_mask, token_k, ...) go to ``goldfish_mask``. Note that
    ``num_items_in_batch``, when given, must count the *kept* targets (labels after the mask).
    """
    kept = apply_goldfish(labels, input_ids, cfg, position_ids, **mask_kwargs)
    return causal_lm_loss(logits, kept, cfg.ignore_index, num_items_in_batch)


def supervised_targets(labels, ignore_index: int = -100) -> torch.Tensor:
    """The supervised next-token targets, flattened in (row, position) order: labels[:, 1:] kept."""
    targets = labels[..., 1:]
    return targets[targets != ignore_index]


_warned: set[str] = set()


def _fall_back(model_name: str, why: str) -> None:
    if model_name not in _warned:
        _warned.add(model_name)
        logger.warning("%s: %s; computing full logits instead (same loss, more memory)", model_name, why)


@contextlib.contextmanager
def logits_only_where_supervised(model, labels, ignore_index: int = -100):
    """While active, ``model(...)`` builds logits only at the positions whose next label is supervised.

    A forward pre-hook on the model's output embeddings (``get_output_embeddings()``) gathers the
    final hidden states at those n positions, so the head sees (1, n, H) instead of (B, T, H) and
    ``outputs.logits`` is (1, n, V), aligned with ``supervised_targets(labels)``. The model runs as
    usual, through any DDP/FSDP/PEFT wrapper, and whatever it does after the head (soft-capping,
    scaling) still applies. A model whose head is not found, or does not receive (B, T, H) hidden
    states, runs unchanged (full (B, T, V) logits; one logged warning per model class):
    ``supervised_loss_from_logits`` accepts both.
    """
    core = model.module if hasattr(model, "module") else model  # DDP keeps the model in .module
    head = core.get_output_embeddings() if hasattr(core, "get_output_embeddings") else None
    if head is None:
        _fall_back(type(core).__name__, "no output embeddings module to hook")
        yield
        return
    keep = labels[..., 1:] != ignore_index

    def gather_supervised(module, args):
        hidden = args[0]
        if hidden.shape[:2] != labels.shape:
            _fall_back(type(core).__name__, f"its head receives hidden states of shape {tuple(hidden.shape)}, not {tuple(labels.shape)} + (H,)")
            return None
        return (hidden[:, :-1][keep].unsqueeze(0),) + tuple(args[1:])

    handle = head.register_forward_pre_hook(gather_supervised)
    try:
        yield
    finally:
        handle.remove()


def supervised_loss_from_logits(logits, labels, ignore_index: int = -100, num_items_in_batch=None) -> torch.Tensor:
    """Loss from the (1, n, V) logits built under ``logits_only_where_supervised(model, labels)``, or
    from full (B, T, V) logits where that context fell back (then ``causal_lm_loss``)."""
    if tuple(logits.shape[:2]) == tuple(labels.shape):
        return causal_lm_loss(logits, labels, ignore_index, num_items_in_batch)
    targets = supervised_targets(labels, ignore_index).to(logits.device)
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets, reduction="sum")
    return _normalise(total, targets.numel(), num_items_in_batch)


def supervised_logits_loss(
    model, input_ids, labels, ignore_index: int = -100, num_items_in_batch=None, **model_inputs
) -> torch.Tensor:
    """Causal-LM loss with the LM head computed only at supervised positions.

    ``labels`` are already masked (goldfish applied). Same value and gradients as
    ``causal_lm_loss(model(...).logits, labels)``, without building (B, T, V) logits.
    ``model_inputs`` (attention_mask, position_ids, ...) are passed to the model.
    """
    with logits_only_where_supervised(model, labels, ignore_index):
        logits = model(input_ids=input_ids, use_cache=False, **model_inputs).logits
    return supervised_loss_from_logits(logits, labels, ignore_index, num_items_in_batch)
