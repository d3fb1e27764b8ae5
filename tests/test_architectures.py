"""The LM head in tiles of kept positions == full logits, for the architectures people fine-tune
(random-init small configs), under LoRA and gradient checkpointing, and with an automatic fall-back
where tiles cannot apply; and each architecture keeps documents apart in a row whose position_ids
restart (--pack, --padding-free)."""

import logging

import pytest
import torch
import transformers as T
from helpers import assert_grads_close
from transformers import AutoModelForCausalLM

from goldfish import GoldfishConfig, apply_goldfish, causal_lm_loss
from goldfish.loss import kept_head_loss
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
    """3 rows of 24 tokens with a prompt and padding; 37 kept targets (7 tiles of 5 and one of 2)."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 97, (3, 24), generator=gen)
    labels = ids.clone()
    labels[0, :7] = -100  # a prompt
    labels[2, 18:] = -100  # padding
    return ids, apply_goldfish(labels, ids, GoldfishConfig(k=3))


def _loss_and_grads(model, supervised: bool, tile_size=None):
    """Loss, gradients, and which logits the model built: "full" (B, T, V), "untiled" (1, n, V) or
    "tiled" (1, 0, V: the head ran in tiles outside the model's forward)."""
    ids, labels = _batch()
    model.zero_grad()
    if supervised:
        with kept_head_loss(model, labels, tile_size=tile_size) as head_loss:
            logits = model(input_ids=ids, use_cache=False).logits
            loss = head_loss(logits)
    else:
        logits = model(input_ids=ids, use_cache=False).logits
        loss = causal_lm_loss(logits, labels)
    loss.backward()
    built = {tuple(labels.shape): "full", (1, 0): "tiled"}.get(tuple(logits.shape[:2]), "untiled")
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, built


def _assert_same(model, tile_size=None, training=False, built="tiled"):
    model.train(training)  # False: dropout off, both passes see the same network
    full, full_grads, _ = _loss_and_grads(model, supervised=False)
    sup, sup_grads, sup_built = _loss_and_grads(model, supervised=True, tile_size=tile_size)
    assert sup_built == built
    assert torch.allclose(sup, full, rtol=1e-5, atol=0), (sup.item(), full.item())
    assert_grads_close(sup_grads, full_grads)


@pytest.mark.parametrize("tile_size", [None, 5])  # None: one tile (V = 97); 5: eight tiles
@pytest.mark.parametrize("arch", list(CONFIGS))
def test_supervised_logits_equal_full_logits(arch, tile_size):
    torch.manual_seed(0)
    _assert_same(AutoModelForCausalLM.from_config(CONFIGS[arch]()), tile_size)


@pytest.mark.parametrize("targets", ["all-linear", ["q_proj", "v_proj", "lm_head"]])
def test_supervised_logits_under_lora(targets):
    """all-linear leaves lm_head a frozen nn.Linear (the fast path, no weight gradient); a LoRA
    lm_head is called per tile under checkpointing."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_config(CONFIGS["llama"]()),
                           LoraConfig(r=4, lora_alpha=8, target_modules=targets, task_type="CAUSAL_LM", init_lora_weights=False))
    _assert_same(model, tile_size=5)


@pytest.mark.parametrize("arch", ["llama", "gemma2-softcap", "gpt2-conv1d-tied"])
def test_supervised_logits_under_gradient_checkpointing(arch):
    torch.manual_seed(0)
    config = CONFIGS[arch]()
    if arch.startswith("gpt2"):
        config.update(dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))  # train mode without dropout
    model = AutoModelForCausalLM.from_config(config)
    model.activation_checkpointing_enable()
    assert model.is_activation_checkpointing
    _assert_same(model, tile_size=5, training=True)


def test_head_hook_that_cannot_apply_falls_back_to_full_logits(caplog):
    class NoHead(T.LlamaForCausalLM):
        def get_output_embeddings(self):
            return None

    torch.manual_seed(0)
    model = NoHead(CONFIGS["llama"]())
    with caplog.at_level(logging.WARNING, logger="goldfish"):
        _assert_same(model, built="full")
        _loss_and_grads(model, supervised=True)
    assert sum("computing full logits instead" in r.message for r in caplog.records) == 1


def test_unknown_post_head_transform_falls_back_to_untiled_logits(caplog):
    """A model that changes its logits in a way its config does not name fails the probe: the head
    then sees all kept positions at once and the model's own transform applies."""

    class DoubledLogits(T.LlamaForCausalLM):
        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            out.logits = out.logits * 2
            return out

    torch.manual_seed(0)
    model = DoubledLogits(CONFIGS["llama"]())
    with caplog.at_level(logging.WARNING, logger="goldfish"):
        _assert_same(model, tile_size=5, built="untiled")
        _loss_and_grads(model, supervised=True)
    assert sum("building the kept positions' logits at once instead" in r.message for r in caplog.records) == 1


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
