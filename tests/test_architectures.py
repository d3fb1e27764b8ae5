"""Logits only where supervised == full logits, for the architectures people fine-tune (random-init
small configs), under LoRA, and with an automatic fall-back where the head hook cannot apply; and
each architecture keeps documents apart in a row whose position_ids restart (--pack, --padding-free)."""

import logging

import pytest
import torch
import transformers as T
from transformers import AutoModelForCausalLM

from goldfish import GoldfishConfig, apply_goldfish, causal_lm_loss, supervised_logits_loss
from goldfish.models import check_attends_within_documents

IDS = dict(bos_token_id=1, eos_token_id=2, pad_token_id=0)
COMMON = dict(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
              max_position_embeddings=64, **IDS)
CONFIGS = {
    "llama": lambda: T.LlamaConfig(**COMMON),
    "qwen2-tied": lambda: T.Qwen2Config(**COMMON, tie_word_embeddings=True),
    "qwen3": lambda: T.Qwen3Config(**COMMON, head_dim=8),
    "mistral": lambda: T.MistralConfig(**COMMON),
    "gemma2-softcap": lambda: T.Gemma2Config(**COMMON, head_dim=8, final_logit_softcapping=5.0),
    "gemma3-softcap": lambda: T.Gemma3TextConfig(**COMMON, head_dim=8, final_logit_softcapping=5.0),
    "phi3": lambda: T.Phi3Config(**COMMON),
    "gpt2-conv1d-tied": lambda: T.GPT2Config(vocab_size=97, n_embd=32, n_layer=2, n_head=4, n_positions=64, **IDS),
    "gpt-neox": lambda: T.GPTNeoXConfig(**COMMON),
    "olmo2": lambda: T.Olmo2Config(**COMMON),
    "granite-scaled": lambda: T.GraniteConfig(**COMMON, logits_scaling=4.0),
    "cohere-scaled": lambda: T.CohereConfig(**COMMON, logit_scale=0.5),
    "falcon": lambda: T.FalconConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, **IDS),
    "opt": lambda: T.OPTConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64,
                               max_position_embeddings=64, word_embed_proj_dim=16, **IDS),
}


def _batch():
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 97, (3, 24), generator=gen)
    labels = ids.clone()
    labels[0, :7] = -100  # a prompt
    labels[2, 18:] = -100  # padding
    return ids, apply_goldfish(labels, ids, GoldfishConfig(k=3))


def _loss_and_grads(model, supervised: bool):
    ids, labels = _batch()
    model.zero_grad()
    if supervised:
        loss = supervised_logits_loss(model, ids, labels)
    else:
        loss = causal_lm_loss(model(input_ids=ids, use_cache=False).logits, labels)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same(model):
    model.train(False)  # dropout off: both passes see the same network
    full, full_grads = _loss_and_grads(model, supervised=False)
    sup, sup_grads = _loss_and_grads(model, supervised=True)
    assert torch.allclose(sup, full, rtol=1e-5, atol=0), (sup.item(), full.item())
    assert full_grads.keys() == sup_grads.keys() and full_grads
    for name, g in full_grads.items():
        assert torch.allclose(sup_grads[name], g, rtol=1e-4, atol=1e-7 * g.abs().max().item()), name


@pytest.mark.parametrize("arch", list(CONFIGS))
def test_supervised_logits_equal_full_logits(arch):
    torch.manual_seed(0)
    _assert_same(AutoModelForCausalLM.from_config(CONFIGS[arch]()))


@pytest.mark.parametrize("targets", ["all-linear", ["q_proj", "v_proj", "lm_head"]])
def test_supervised_logits_under_lora(targets):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_config(CONFIGS["llama"]()),
                           LoraConfig(r=4, lora_alpha=8, target_modules=targets, task_type="CAUSAL_LM", init_lora_weights=False))
    _assert_same(model)


def test_head_hook_that_cannot_apply_falls_back_to_full_logits(caplog):
    class NoHead(T.LlamaForCausalLM):
        def get_output_embeddings(self):
            return None

    torch.manual_seed(0)
    model = NoHead(CONFIGS["llama"]())
    with caplog.at_level(logging.WARNING, logger="goldfish"):
        _assert_same(model)
        _loss_and_grads(model, supervised=True)
    assert sum("computing full logits instead" in r.message for r in caplog.records) == 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("arch", list(CONFIGS))
def test_rows_with_restarting_positions_keep_documents_apart(arch, dtype):
    """Every architecture here passes the probe, in float32 and bfloat16, but OPT (its causal mask
    ignores the position_ids restarts), which is refused."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(CONFIGS[arch]()).to(dtype)
    if arch == "opt":
        with pytest.raises(ValueError, match="--pack: OPTForCausalLM cannot train on rows of several documents: its documents read each other"):
            check_attends_within_documents(model, "--pack")
    else:
        check_attends_within_documents(model, "--pack")


def test_a_model_whose_positions_do_not_restart_is_refused():
    """GPT-2 (absolute positions) whose position embedding lets each document's positions continue
    from the one before: its documents stay apart (the mask reads the real position_ids) but the
    second one sits at positions 8-15, so it is refused."""
    torch.manual_seed(0)
    model = T.GPT2LMHeadModel(CONFIGS["gpt2-conv1d-tied"]())
    embed = model.transformer.wpe.forward

    def continuing(position_ids):  # each document's positions continue from the one before it
        restart = torch.cat([torch.zeros_like(position_ids[..., :1]), (position_ids[..., 1:] == 0).long()], -1)
        offsets = torch.cumsum(restart, -1) * 8
        return embed(position_ids + offsets)

    model.transformer.wpe.forward = continuing
    with pytest.raises(ValueError, match="a document's positions do not restart with its position_ids"):
        check_attends_within_documents(model, "--padding-free")
