"""The goldfish loss: mean cross-entropy over the kept ("supervised") targets only.

    L = -(1/|G|) * sum_{i in G} log p(x_i | x_<i)

G is the set of targets whose label is not ignore_index after the goldfish mask. With
``num_items_in_batch`` (HF Trainer's count of supervised targets in the whole global batch) the sum
is divided by that instead, so gradient accumulation and DDP average over the global batch. When G
is empty the loss is 0 with zero gradient (never NaN) and still part of the autograd graph, so
DDP/FSDP gradient synchronisation runs as usual.

``supervised_logits_loss`` computes it from the model without the (B, T, V) logits: the LM head runs
only at the kept positions, in tiles of ``tile_size`` positions, so at most ``tile_size x V`` logits
exist at any time (forward or backward), with the log-sum-exp and the target logit in fp32.
"""

from __future__ import annotations

import contextlib
import logging
import weakref

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


def _fall_back(model_name: str, why: str, instead: str = "computing full logits instead") -> None:
    if model_name not in _warned:
        _warned.add(model_name)
        logger.warning("%s: %s; %s (same loss, more memory)", model_name, why, instead)


def _kept_hidden(core, hidden, labels, keep):
    """hidden (B, T, H) at the positions whose next label is kept: (n, H); None (and the fall-back
    warning) when the head does not receive (B, T, H)."""
    if hidden.shape[:2] != labels.shape:
        _fall_back(type(core).__name__, f"its head receives hidden states of shape {tuple(hidden.shape)}, not {tuple(labels.shape)} + (H,)")
        return None
    return hidden[:, :-1][keep.to(hidden.device)]


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
        kept = _kept_hidden(core, args[0], labels, keep)
        return None if kept is None else (kept.unsqueeze(0),) + tuple(args[1:])

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


TILE_LOGITS = 2**25  # values of one tile's fp32 logits by default (128 MiB)


def default_tile_size(vocab_size: int) -> int:
    """Kept positions per LM-head tile when none is given: ``max(1, TILE_LOGITS // vocab_size)``, so
    one tile's fp32 logits take at most 128 MiB (220 positions at V = 151,936; 1,048 at V = 32,000)."""
    return max(1, TILE_LOGITS // vocab_size)


def logit_transform(config) -> tuple[float, float | None]:
    """``(scale, softcap)`` of what a HF causal LM does to its head's output z, read from its config
    as TRL's fused head reads it: logits = softcap * tanh(scale * z / softcap), or scale * z when
    softcap is None. softcap = ``final_logit_softcapping`` (Gemma 2/3); scale = ``logit_scale``
    (Cohere), else ``output_multiplier``, else ``lm_head_multiplier``, else 1 / ``logits_scaling``
    (Granite; HyperCLOVA X multiplies by it), else 1."""
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    scale = getattr(config, "logit_scale", None)
    for name in ("output_multiplier", "lm_head_multiplier"):
        scale = getattr(config, name, None) if scale is None else scale
    scaling = getattr(config, "logits_scaling", None)
    if scale is None and scaling is not None:
        scale = scaling if getattr(config, "model_type", None) == "hyperclovax" else 1 / scaling
    return (1.0 if scale is None else float(scale)), getattr(config, "final_logit_softcapping", None)


def _transform(z, scale: float, softcap: float | None):
    if scale != 1.0:
        z = z * scale
    if softcap is not None:
        z = torch.tanh(z / softcap) * softcap
    return z


class _TiledLinearCrossEntropy(torch.autograd.Function):
    """sum_i [logsumexp(f(z_i)) - f(z_i)[t_i]], z_i = hidden_i @ weight.T + bias, f = ``_transform``,
    tile by tile of rows; the gradients are computed in the same pass (fp32) and only scaled in
    backward, so no tile's logits outlive its iteration and the weight is never read after forward
    (under FSDP2 it is the unsharded parameter only during the head's forward)."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, tile: int, scale: float, softcap, needs: tuple):
        need_h, need_w, need_b = needs
        f32 = torch.float32
        total = torch.zeros((), dtype=f32, device=hidden.device)
        grad_h = torch.empty(hidden.shape, dtype=f32, device=hidden.device) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=f32, device=weight.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=f32, device=bias.device) if need_b else None
        for start in range(0, hidden.shape[0], tile):
            x, t = hidden[start : start + tile], targets[start : start + tile].unsqueeze(-1)
            z = F.linear(x, weight, bias).float()
            if scale != 1.0:
                z = z.mul_(scale)
            if softcap is not None:
                tanh = z.div_(softcap).tanh_()
                z = tanh * softcap
            target, top = z.gather(-1, t), z.amax(-1, keepdim=True)
            dz = z.sub_(top).exp_()  # in place: one tile of logits alive (two with soft-capping)
            sum_exp = dz.sum(-1, keepdim=True)
            total += (top + sum_exp.log() - target).sum()
            if not (need_h or need_w or need_b):
                continue
            dz.div_(sum_exp).scatter_add_(-1, t, torch.full(t.shape, -1.0, dtype=f32, device=t.device))  # softmax - onehot
            if softcap is not None:
                dz.mul_(tanh.square_().neg_().add_(1))
            if scale != 1.0:
                dz.mul_(scale)
            if need_h:
                grad_h[start : start + tile] = torch.mm(dz.to(weight.dtype), weight)
            if need_w:
                grad_w.addmm_(dz.t(), x.float())
            if need_b:
                grad_b += dz.sum(0)
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.dtypes = hidden.dtype, weight.dtype, None if bias is None else bias.dtype
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grads = [None if g is None else (g * grad_total).to(dtype) for g, dtype in zip(ctx.saved_tensors, ctx.dtypes)]
        return (*grads, None, None, None, None, None)


def tiled_linear_cross_entropy(hidden, weight, bias, targets, tile_size: int | None = None, scale: float = 1.0,
                               softcap: float | None = None) -> torch.Tensor:
    """Sum over rows i of -log softmax(f(hidden[i] @ weight.T + bias))[targets[i]], fp32 scalar.

    hidden (n, H), weight (V, H), bias (V,) or None, targets (n,) int64; f = ``logit_transform``'s
    (scale, softcap). Computed ``tile_size`` rows at a time (default ``default_tile_size(V)``), with
    the gradients of hidden, weight and bias (those that require grad, when grad is enabled) built
    in the same pass in fp32: at most tile_size x V logits exist at once, forward or backward. n = 0
    gives 0 with zero gradients.
    """
    tile = tile_size or default_tile_size(weight.shape[0])
    grad = torch.is_grad_enabled()
    needs = (grad and hidden.requires_grad, grad and weight.requires_grad, grad and bias is not None and bias.requires_grad)
    return _TiledLinearCrossEntropy.apply(hidden, weight, bias, targets, tile, scale, softcap, needs)


def _module_tile(head, x, targets, scale: float, softcap):
    z = _transform(head.forward(x.unsqueeze(0))[0].float(), scale, softcap)
    return (torch.logsumexp(z, -1) - z.gather(-1, targets.unsqueeze(-1)).squeeze(-1)).sum()


class _TiledModuleCrossEntropy(torch.autograd.Function):
    """``_TiledLinearCrossEntropy`` for any head module: each tile runs ``head.forward`` and, right
    after, its own backward (``torch.autograd.grad``), accumulating the gradients of the hidden states
    and of ``params`` in fp32; backward only scales them."""

    @staticmethod
    def forward(ctx, head, hidden, targets, tile: int, scale: float, softcap, need_h: bool, *params):
        f32 = torch.float32
        total = torch.zeros((), dtype=f32, device=hidden.device)
        grad_h = torch.zeros(hidden.shape, dtype=f32, device=hidden.device) if need_h else None
        grads = [torch.zeros(p.shape, dtype=f32, device=p.device) for p in params]
        for start in range(0, max(hidden.shape[0], 1), tile):  # n = 0: one empty tile, so params get zero gradients
            x = hidden[start : start + tile].detach().requires_grad_(need_h)
            wrt = [x, *params] if need_h else list(params)
            with torch.set_grad_enabled(bool(wrt)):
                part = _module_tile(head, x, targets[start : start + tile], scale, softcap)
                tile_grads = torch.autograd.grad(part, wrt, allow_unused=True) if wrt else ()
            total += part.detach()
            if need_h:
                grad_h[start : start + tile] = tile_grads[0]
            for acc, g in zip(grads, tile_grads[int(need_h) :]):
                if g is not None:
                    acc += g
        ctx.save_for_backward(grad_h, *grads)
        ctx.dtypes = hidden.dtype, *(p.dtype for p in params)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grad_h, *grads = [None if g is None else (g * grad_total).to(dtype) for g, dtype in zip(ctx.saved_tensors, ctx.dtypes)]
        return (None, grad_h, None, None, None, None, None, *grads)


def tiled_module_cross_entropy(head, hidden, targets, tile_size: int, scale: float = 1.0,
                               softcap: float | None = None) -> torch.Tensor:
    """``tiled_linear_cross_entropy`` for any head module (PEFT LoRA, quantized): each tile calls
    ``head.forward`` on (1, tile, H) (not ``head(...)``: no hooks, so it can run inside the head's own
    forward pre-hook, where FSDP2 has gathered its parameters) and its backward at once; the
    gradients of hidden and of the head's parameters that require grad accumulate in fp32. At most
    one tile's logits and their graph exist at a time. n = 0 still calls the head once (on zero rows),
    so its parameters get a zero gradient."""
    grad = torch.is_grad_enabled()
    params = [p for p in head.parameters() if p.requires_grad] if grad else []
    return _TiledModuleCrossEntropy.apply(head, hidden, targets, tile_size, scale, softcap, grad and hidden.requires_grad, *params)


def _is_plain_linear(module) -> bool:
    return isinstance(module, torch.nn.Linear) and type(module).forward is torch.nn.Linear.forward and "forward" not in vars(module)


_probed: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _transform_holds(core, head, scale: float, softcap) -> str | None:
    """Why the model's logits are not ``_transform(head output)``, or None when they are.

    Once per model (and transform): a no-grad, eval-mode forward of 2 tokens in which the head's
    output is replaced by known values from -64 to 64; the model's logits must equal those values
    under (scale, softcap) within 2 ulps of their dtype.
    """
    if _probed.get(core, (None,))[0] == (scale, softcap):
        return _probed[core][1]
    known = []

    def replace(module, args, out):
        known.append(torch.linspace(-64, 64, out.shape[-1], dtype=out.dtype, device=out.device).expand(out.shape))
        return known[0]

    modes = [(m, m.training) for m in core.modules()]
    handle = head.register_forward_hook(replace, prepend=True)
    try:
        core.train(False)
        with torch.no_grad():
            embeddings = core.get_input_embeddings() if hasattr(core, "get_input_embeddings") else None
            ids = torch.zeros(1, 2, dtype=torch.long, device=head.weight.device if embeddings is None else embeddings.weight.device)
            logits = core(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits
        why = f"its logits are not its head's output under the config's scale {scale} and soft-cap {softcap}"
        if known and logits.shape == known[0].shape:
            want, eps = _transform(known[0], scale, softcap), torch.finfo(known[0].dtype).eps
            why = None if torch.allclose(logits.float(), want.float(), rtol=2 * eps, atol=eps) else why
    except Exception as e:  # a model that cannot run the probe is not tiled
        why = f"the head-transform probe failed ({type(e).__name__}: {e})"
    finally:
        handle.remove()
        for m, training in modes:
            m.training = training
    _probed[core] = ((scale, softcap), why)
    return why


@contextlib.contextmanager
def kept_head_loss(model, labels, ignore_index: int = -100, tile_size: int | None = None):
    """While active, ``model(...)``'s LM head runs only at the kept positions, in tiles; yields
    ``loss(logits, num_items_in_batch=None)``, the loss of that forward.

    A forward pre-hook on ``get_output_embeddings()`` takes the final hidden states at the n kept
    positions (those whose next label is not ignore_index) and hands the head an empty (1, 0, H)
    input, so the model's forward and its post-head transforms cost nothing. Right there, inside the
    head's forward (where FSDP2 and ZeRO-3 have gathered its parameters), the loss and its gradients
    are computed in tiles: ``tiled_linear_cross_entropy`` for a plain ``nn.Linear`` head (tied or
    not, bias or not), ``tiled_module_cross_entropy`` for any other head module (PEFT LoRA on
    ``lm_head``). The model's post-head transform is taken from its config (``logit_transform``) and
    verified once per model with a probe of its own forward (``_transform_holds``).
    Falls back, with one logged warning per model class: to today's untiled path (the head sees
    (1, n, H), ``logits_only_where_supervised``) when the probe fails; to full logits when there is
    no head or it does not receive (B, T, H). ``loss`` then reads ``logits`` instead. Only the first
    head call inside the context is intercepted. ``tile_size`` defaults to ``default_tile_size(V)``.
    """
    core = model.module if hasattr(model, "module") else model  # DDP keeps the model in .module
    head = core.get_output_embeddings() if hasattr(core, "get_output_embeddings") else None

    def from_logits(logits, num_items_in_batch=None):
        return supervised_loss_from_logits(logits, labels, ignore_index, num_items_in_batch)

    scale, softcap = logit_transform(core.config) if hasattr(core, "config") else (1.0, None)
    why = None if head is None else _transform_holds(core, head, scale, softcap)
    if head is None or why is not None:
        if why is not None:
            _fall_back(type(core).__name__, why, "building the kept positions' logits at once instead")
        with logits_only_where_supervised(model, labels, ignore_index):
            yield from_logits
        return
    keep = labels[..., 1:] != ignore_index
    targets = supervised_targets(labels, ignore_index)
    state = {}

    def take_kept(module, args):
        if state:  # the model's first head call only
            return None
        state["called"] = True
        kept = _kept_hidden(core, args[0], labels, keep)
        if kept is None:
            return None
        kept_targets = targets.to(kept.device)
        tile = tile_size or default_tile_size(getattr(module, "out_features", None) or module.weight.shape[0])
        if _is_plain_linear(module):
            state["total"] = tiled_linear_cross_entropy(kept, module.weight, module.bias, kept_targets, tile, scale, softcap)
        else:
            state["total"] = tiled_module_cross_entropy(module, kept, kept_targets, tile, scale, softcap)
        return (args[0][:1, :0],) + tuple(args[1:])

    def loss(logits, num_items_in_batch=None):
        if "total" not in state:  # the hook did not run, or could not apply: full logits
            return from_logits(logits, num_items_in_batch)
        return _normalise(state["total"], targets.numel(), num_items_in_batch)

    handle = head.register_forward_pre_hook(take_kept)
    try:
        yield loss
    finally:
        handle.remove()


def supervised_logits_loss(
    model, input_ids, labels, ignore_index: int = -100, num_items_in_batch=None, *, tile_size: int | None = None, **model_inputs
) -> torch.Tensor:
    """Causal-LM loss with the LM head computed only at supervised positions, in tiles.

    ``labels`` are already masked (goldfish applied). Same value and gradients as
    ``causal_lm_loss(model(...).logits, labels)``, with at most ``tile_size x V`` logits at a time
    (``kept_head_loss``; ``tile_size`` defaults to ``default_tile_size(V)``).
    ``model_inputs`` (attention_mask, position_ids, ...) are passed to the model.
    """
    with kept_head_loss(model, labels, ignore_index, tile_size) as loss:
        logits = model(input_ids=input_ids, use_cache=False, **model_inputs).logits
        return loss(logits, num_items_in_batch)
