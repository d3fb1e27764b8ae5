import math

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_grads_close

from goldfish import GoldfishConfig, apply_goldfish, causal_lm_loss, goldfish_loss, goldfish_mask, supervised_logits_loss
from goldfish.loss import default_tile_size, logit_transform, tiled_linear_cross_entropy, tiled_module_cross_entropy

CFG = GoldfishConfig(k=2, h=2)


def test_loss_equals_hand_computed_value():
    ids = torch.tensor([[3, 1, 2, 0, 1, 3, 2]])
    labels = ids.clone()
    labels[0, :2] = -100  # a prompt
    logits = torch.randn(1, 7, 4, generator=torch.Generator().manual_seed(0))
    drop = goldfish_mask(ids, CFG)[0]
    terms = []
    for i in range(1, 7):  # logits[i-1] predicts token i
        if labels[0, i] != -100 and not drop[i]:
            terms.append(-torch.log_softmax(logits[0, i - 1], -1)[ids[0, i]])
    assert 0 < len(terms) < 5  # the example does exercise prompt masking and dropping
    want = torch.stack(terms).sum() / len(terms)
    assert torch.allclose(goldfish_loss(logits, labels, ids, CFG), want)
    assert torch.allclose(goldfish_loss(logits, labels, ids, CFG, num_items_in_batch=10), want * len(terms) / 10)


def test_dropped_and_ignored_targets_get_exactly_zero_gradient():
    ids = torch.randint(0, 50, (2, 64))
    labels = ids.clone()
    labels[:, :10] = -100
    logits = torch.randn(2, 64, 50, requires_grad=True)
    goldfish_loss(logits, labels, ids, CFG).backward()
    kept = apply_goldfish(labels, ids, CFG)[:, 1:] != -100
    grad_rows = logits.grad[:, :-1].abs().sum(-1)
    assert (grad_rows[~kept] == 0).all() and (grad_rows[kept] > 0).all()
    assert (logits.grad[:, -1] == 0).all()


def test_nothing_supervised_gives_zero_loss_zero_grad_no_nan():
    ids = torch.randint(0, 50, (2, 16))
    logits = torch.randn(2, 16, 50, requires_grad=True)
    loss = goldfish_loss(logits, torch.full_like(ids, -100), ids, CFG)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_bf16_logits():
    ids = torch.randint(0, 50, (2, 32))
    logits = torch.randn(2, 32, 50)
    full = goldfish_loss(logits, ids, ids, CFG)
    half = goldfish_loss(logits.bfloat16(), ids, ids, CFG)
    assert half.dtype == torch.float32 and math.isclose(full.item(), half.item(), rel_tol=2e-2)


@pytest.fixture(scope="module")
def micro_model(tokenizer):
    from transformers import AutoModelForCausalLM

    from goldfish.embedded.tiny import tiny_llama_config

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(tiny_llama_config(tokenizer, "micro"))


@pytest.mark.parametrize("tile_size", [None, 16])  # 66 kept targets: one tile (the default at V = 8000), five
def test_supervised_logits_path_matches_full_logits(micro_model, tile_size):
    ids = torch.randint(0, 8000, (3, 40), generator=torch.Generator().manual_seed(0))
    labels = apply_goldfish(torch.where(torch.arange(40) < 8, -100, ids), ids, GoldfishConfig())
    attention_mask = torch.ones_like(ids)
    grads = []
    for path in ("full", "supervised"):
        micro_model.zero_grad()
        if path == "full":
            loss = causal_lm_loss(micro_model(input_ids=ids, attention_mask=attention_mask).logits, labels, num_items_in_batch=77)
        else:
            loss = supervised_logits_loss(micro_model, ids, labels, num_items_in_batch=77, attention_mask=attention_mask,
                                          tile_size=tile_size)
        loss.backward()
        grads.append((loss.detach(), {n: p.grad.clone() for n, p in micro_model.named_parameters()}))
    (l_full, g_full), (l_sup, g_sup) = grads
    assert torch.allclose(l_sup, l_full, rtol=1e-5, atol=0)
    assert_grads_close(g_sup, g_full)


def test_supervised_logits_path_with_nothing_supervised(micro_model):
    ids = torch.randint(0, 8000, (2, 12))
    micro_model.zero_grad()
    loss = supervised_logits_loss(micro_model, ids, torch.full_like(ids, -100))
    loss.backward()
    assert loss.item() == 0.0
    assert all(p.grad is not None and not p.grad.abs().sum() for p in micro_model.parameters())


def _head_inputs(n=50, H=16, V=300, bias=True, dtype=torch.float32):
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(n, H, generator=gen).to(dtype).requires_grad_()
    weight = (torch.randn(V, H, generator=gen) / 2).to(dtype).requires_grad_()
    b = torch.randn(V, generator=gen).to(dtype).requires_grad_() if bias else None
    return hidden, weight, b, torch.randint(0, V, (n,), generator=gen)


def _full_logits_reference(hidden, weight, bias, targets, scale=1.0, softcap=None):
    """All n x V logits at once, transformed as Gemma (soft-cap) / Cohere (scale) do, torch's cross-entropy."""
    z = hidden @ weight.t() if bias is None else torch.addmm(bias, hidden, weight.t())
    z = z * scale
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    return F.cross_entropy(z.float(), targets, reduction="sum")


def _grads(loss, *tensors):
    (loss * 0.37).backward()  # an upstream gradient that is not 1
    out = {f"t{i}": t.grad.clone() for i, t in enumerate(tensors) if t is not None}
    for t in tensors:
        if t is not None:
            t.grad = None
    return out


@pytest.mark.parametrize("tile_size", [1, 7, 50, 64])  # 50 rows: 50 tiles, 8 with a short last one, one, one larger than n
@pytest.mark.parametrize("scale, softcap, bias", [(1.0, None, False), (0.25, None, True), (1.0, 3.0, False), (2.0, 3.0, True)])
def test_tiled_linear_cross_entropy_equals_full_logits(tile_size, scale, softcap, bias):
    hidden, weight, b, targets = _head_inputs(bias=bias)
    want = _full_logits_reference(hidden, weight, b, targets, scale, softcap)
    want_grads = _grads(want, hidden, weight, b)
    got = tiled_linear_cross_entropy(hidden, weight, b, targets, tile_size, scale, softcap)
    assert got.dtype == torch.float32 and math.isclose(got.item(), want.item(), rel_tol=1e-5)
    assert_grads_close(_grads(got, hidden, weight, b), want_grads)


@pytest.mark.parametrize("softcap", [None, 3.0])
def test_tiled_module_cross_entropy_equals_full_logits(softcap):
    """Any head module (here a LoRA-like nn.Linear plus a low-rank branch), per tile with its own backward."""

    class LowRank(torch.nn.Module):
        def __init__(self, base):
            super().__init__()
            self.base, self.a, self.b = base, torch.nn.Linear(16, 4, bias=False), torch.nn.Linear(4, 300, bias=False)

        def forward(self, x):
            return self.base(x) + self.b(self.a(x))

    hidden, _, _, targets = _head_inputs()
    torch.manual_seed(0)
    head = LowRank(torch.nn.Linear(16, 300))
    head.base.weight.requires_grad_(False)  # frozen, as under LoRA: no gradient built for it
    want = F.cross_entropy(_capped(head(hidden), softcap), targets, reduction="sum")
    want_grads = _grads(want, hidden, head.base.bias, head.a.weight, head.b.weight)
    got = tiled_module_cross_entropy(head, hidden, targets, 7, softcap=softcap)
    assert math.isclose(got.item(), want.item(), rel_tol=1e-5)
    assert_grads_close(_grads(got, hidden, head.base.bias, head.a.weight, head.b.weight), want_grads)
    assert head.base.weight.grad is None


def _capped(z, softcap):
    return z if softcap is None else softcap * torch.tanh(z / softcap)


def test_tiled_head_with_no_kept_position_gives_zero_attached_to_every_parameter():
    hidden, weight, b, targets = _head_inputs(n=0)
    loss = tiled_linear_cross_entropy(hidden, weight, b, targets, 4)
    head = torch.nn.Linear(16, 300)
    loss = loss + tiled_module_cross_entropy(head, hidden, targets, 4)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    for p in (weight, b, head.weight, head.bias):
        assert p.grad is not None and not p.grad.abs().sum()


def test_tiled_head_without_grad_mode_computes_the_loss_only():
    hidden, weight, b, targets = _head_inputs()
    with torch.no_grad():
        got = tiled_linear_cross_entropy(hidden, weight, b, targets, 7)
        want = _full_logits_reference(hidden, weight, b, targets)
    assert not got.requires_grad and math.isclose(got.item(), want.item(), rel_tol=1e-5)


def test_tiled_head_bfloat16():
    """bf16 weights: logits in bf16 as the model builds them, log-sum-exp in fp32; gradients in bf16."""
    hidden, weight, b, targets = _head_inputs(dtype=torch.bfloat16)
    want = _full_logits_reference(hidden, weight, b, targets)
    want_grads = _grads(want, hidden, weight, b)
    got = tiled_linear_cross_entropy(hidden, weight, b, targets, 7)
    assert got.dtype == torch.float32 and math.isclose(got.item(), want.item(), rel_tol=1e-3)
    for name, g in _grads(got, hidden, weight, b).items():
        assert g.dtype == torch.bfloat16 and torch.allclose(g.float(), want_grads[name].float(), rtol=2e-2, atol=2e-2 * want_grads[name].abs().max().item())


def _peak_bytes(fn) -> int:
    """Peak of the bytes allocated by torch on the CPU while fn runs (torch.profiler's memory events)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"), key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak


@pytest.mark.parametrize("softcap", [None, 30.0])
def test_tiled_head_never_holds_more_than_a_tile_of_logits(softcap):
    """Forward and backward of 512 kept positions, V = 8192, tiles of 16: beyond the fp32 weight
    gradient (and its scaled copy in backward) at most 2 tiles of fp32 logits are alive, 1/16 of
    what the full 512 x V logits alone would take."""
    n, H, V, tile = 512, 32, 8192, 16
    hidden, weight, _, targets = _head_inputs(n, H, V, bias=False)
    peak = _peak_bytes(lambda: tiled_linear_cross_entropy(hidden, weight, None, targets, tile, softcap=softcap).backward())
    weight_grads = 2 * V * H * 4
    assert peak <= weight_grads + 2 * tile * V * 4 + 64 * 1024, peak
    full = _peak_bytes(lambda: _full_logits_reference(hidden, weight, None, targets, softcap=softcap).backward())
    assert full >= n * V * 4


def test_logit_transform_reads_the_config_as_trl_does():
    from types import SimpleNamespace as C

    assert logit_transform(C()) == (1.0, None)
    assert logit_transform(C(final_logit_softcapping=30.0)) == (1.0, 30.0)  # Gemma 2/3
    assert logit_transform(C(logit_scale=0.0625)) == (0.0625, None)  # Cohere
    assert logit_transform(C(logits_scaling=4.0, model_type="granite")) == (0.25, None)
    assert logit_transform(C(logits_scaling=4.0, model_type="hyperclovax")) == (4.0, None)
    assert logit_transform(C(lm_head_multiplier=2.0, logits_scaling=4.0)) == (2.0, None)
    assert default_tile_size(151_936) == 220 and default_tile_size(32_000) == 1048 and default_tile_size(10**9) == 1
