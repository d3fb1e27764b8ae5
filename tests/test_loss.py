import math

import pytest
import torch

from goldfish import GoldfishConfig, apply_goldfish, causal_lm_loss, goldfish_loss, goldfish_mask, supervised_logits_loss

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


def test_supervised_logits_path_matches_full_logits(micro_model):
    ids = torch.randint(0, 8000, (3, 40))
    labels = apply_goldfish(torch.where(torch.arange(40) < 8, -100, ids), ids, GoldfishConfig())
    attention_mask = torch.ones_like(ids)
    grads = []
    for path in ("full", "supervised"):
        micro_model.zero_grad()
        if path == "full":
            loss = causal_lm_loss(micro_model(input_ids=ids, attention_mask=attention_mask).logits, labels, num_items_in_batch=77)
        else:
            loss = supervised_logits_loss(micro_model, ids, labels, num_items_in_batch=77, attention_mask=attention_mask)
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in micro_model.parameters()]))
    (l_full, g_full), (l_sup, g_sup) = grads
    assert torch.allclose(l_full, l_sup, atol=1e-6)
    for a, b in zip(g_full, g_sup):
        assert torch.allclose(a, b, atol=1e-6)


def test_supervised_logits_path_with_nothing_supervised(micro_model):
    ids = torch.randint(0, 8000, (2, 12))
    micro_model.zero_grad()
    loss = supervised_logits_loss(micro_model, ids, torch.full_like(ids, -100))
    loss.backward()
    assert loss.item() == 0.0
    assert all(p.grad is not None and not p.grad.abs().sum() for p in micro_model.parameters())
