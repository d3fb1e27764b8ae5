import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import assert_grads_close, micro_model, seq2seq_collator, sgd_args, text_examples
from transformers import Trainer

from goldfish import GoldfishConfig, apply_goldfish, causal_lm_loss, goldfish_loss, goldfish_mask
from goldfish.integrations.hf import GoldfishCollator, GoldfishTrainer, goldfish_labels_map

CFG = GoldfishConfig()


def test_collator_masks_labels_and_reads_prompt_ids(tokenizer):
    feats = text_examples(tokenizer, n=4, prompt=10)
    batch = GoldfishCollator(seq2seq_collator(tokenizer), CFG)(feats)
    plain = seq2seq_collator(tokenizer)(feats)
    want = apply_goldfish(plain["labels"], plain["input_ids"], CFG, attention_mask=plain["attention_mask"])
    assert torch.equal(batch["labels"], want)
    assert (batch["labels"][:, :10] == -100).all()


def test_collator_per_example_k_and_opt_out(tokenizer):
    feats = text_examples(tokenizer, n=2, length=300)
    feats[0]["goldfish_k"] = [math.inf] * len(feats[0]["input_ids"])
    feats[1]["goldfish_k"] = [2.0] * len(feats[1]["input_ids"])
    batch = GoldfishCollator(seq2seq_collator(tokenizer), CFG)(feats)
    assert "goldfish_k" in feats[0]  # the dataset's rows stay intact
    n0 = len(feats[0]["input_ids"])
    assert torch.equal(batch["labels"][0, :n0], torch.tensor(feats[0]["input_ids"]))
    dropped = (batch["labels"][1] == -100)[: len(feats[1]["input_ids"])].float().mean().item()
    assert abs(dropped - 0.5) < 0.1


def test_plain_trainer_with_collator_gives_the_core_goldfish_loss(tokenizer, tmp_path):
    model = micro_model(tokenizer)
    feats = text_examples(tokenizer, n=4, prompt=5)
    batch = GoldfishCollator(seq2seq_collator(tokenizer), CFG)(feats)
    trainer = Trainer(model=model, args=sgd_args(tmp_path, 4), data_collator=GoldfishCollator(seq2seq_collator(tokenizer), CFG))
    hf_loss = trainer.compute_loss(model, dict(batch))
    plain = seq2seq_collator(tokenizer)(feats)
    logits = model(input_ids=plain["input_ids"], attention_mask=plain["attention_mask"]).logits
    core = goldfish_loss(logits, plain["labels"], plain["input_ids"], CFG, attention_mask=plain["attention_mask"])
    assert torch.allclose(hf_loss, core, atol=1e-5)
    gf = GoldfishTrainer(model=model, args=sgd_args(tmp_path, 4))
    assert torch.allclose(gf.compute_loss(model, dict(batch)), core, atol=1e-5)


def test_dropped_targets_contribute_exactly_zero_gradient(tokenizer):
    model = micro_model(tokenizer)
    feats = text_examples(tokenizer, n=2)
    batch = GoldfishCollator(seq2seq_collator(tokenizer), CFG)(feats)
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    out.logits.retain_grad()
    from goldfish import causal_lm_loss

    causal_lm_loss(out.logits, batch["labels"]).backward()
    row_grad = out.logits.grad[:, :-1].abs().sum(-1)
    kept = batch["labels"][:, 1:] != -100
    assert (row_grad[~kept] == 0).all() and (row_grad[kept] > 0).all()
    dropped = goldfish_mask(batch["input_ids"], CFG, attention_mask=batch["attention_mask"])[:, 1:]
    assert dropped[batch["attention_mask"][:, 1:].bool()].any()


def _weights_after(tokenizer, tmp_path, batch_size, grad_accum, **trainer_kwargs):
    model = micro_model(tokenizer)
    trainer = GoldfishTrainer(
        model=model, args=sgd_args(tmp_path, batch_size, grad_accum), train_dataset=text_examples(tokenizer, n=4, prompt=7),
        data_collator=GoldfishCollator(seq2seq_collator(tokenizer), CFG), **trainer_kwargs,
    )
    trainer.train()
    return [p.detach().clone() for p in model.parameters()]


def test_gradient_accumulation_is_exact(tokenizer, tmp_path):
    one_by_four = _weights_after(tokenizer, tmp_path / "a", 4, 1)
    two_by_two = _weights_after(tokenizer, tmp_path / "b", 2, 2, head_tile_size=16)
    full_logits = _weights_after(tokenizer, tmp_path / "c", 2, 2, supervised_logits=False)
    start = [p.detach() for p in micro_model(tokenizer).parameters()]
    assert any(not torch.equal(a, s) for a, s in zip(one_by_four, start))
    for a, b, c in zip(one_by_four, two_by_two, full_logits):
        assert torch.allclose(a, b, atol=1e-6) and torch.allclose(a, c, atol=1e-6)


def test_goldfish_trainer_evaluation_loss_equals_full_logits(tokenizer, tmp_path):
    """Evaluation (no grad): the tiled head gives the loss only, the same as full logits."""
    ds = text_examples(tokenizer, n=4, prompt=7)
    losses = [GoldfishTrainer(model=micro_model(tokenizer), args=sgd_args(tmp_path, 2, prediction_loss_only=True), eval_dataset=ds,
                              data_collator=GoldfishCollator(seq2seq_collator(tokenizer), CFG), supervised_logits=supervised,
                              head_tile_size=16).evaluate()["eval_loss"] for supervised in (True, False)]
    assert math.isclose(losses[0], losses[1], rel_tol=1e-5)


def test_goldfish_labels_map_with_datasets_num_proc(tokenizer):
    from datasets import Dataset

    feats = text_examples(tokenizer, n=6, length=200, prompt=4)
    rows = [{**f, "goldfish_k": None, "goldfish": True} for f in feats]
    rows[1]["goldfish"] = False
    rows[2]["goldfish_k"] = 8.0
    ds = Dataset.from_list(rows).map(goldfish_labels_map(CFG), batched=True, batch_size=2, num_proc=2)
    for i, f in enumerate(feats):
        ids, labels = np.array(f["input_ids"]), np.array(f["labels"])
        if i == 1:
            want = labels
        else:
            want = apply_goldfish(labels, ids, GoldfishConfig(k=8) if i == 2 else CFG)
        assert ds[i]["labels"] == want.tolist()


@pytest.mark.parametrize("column,value,message", [
    ("goldfish_k", 1.5, "goldfish_k must be a number >= 2, got 1.5"),
    ("goldfish_k", "4", "goldfish_k must be a number >= 2, got '4'"),
    ("goldfish", "no", "'goldfish' must be true or false (a JSON boolean), got 'no'"),
])
def test_goldfish_labels_map_refuses_what_goldfish_train_refuses(tokenizer, column, value, message):
    feats = text_examples(tokenizer, n=2, length=40)
    batch = {"input_ids": [f["input_ids"] for f in feats], "labels": [f["labels"] for f in feats], column: [None, value]}
    with pytest.raises(ValueError, match=re.escape(f"example 1 of a batch starting {feats[1]['input_ids'][:8]}: {message}")):
        goldfish_labels_map(CFG)(batch)


def _goldfish_chats(tokenizer, n: int = 12):
    """n chats tokenized assistant-only, then goldfish labels by datasets.map: (raw rows, dataset)."""
    from datasets import Dataset

    from goldfish.data import tokenize_document
    from goldfish.embedded.corpus import corpus_part

    chats = [
        {"messages": [{"role": "user", "content": f"Tell me about topic {i}."},
                      {"role": "assistant", "content": d["text"][:600]}]}
        for i, d in enumerate(corpus_part("targets")[:n])
    ]
    rows = []
    for c in chats:
        ids, labels = tokenize_document(c, tokenizer)
        rows.append({"input_ids": ids, "labels": labels})
    return rows, Dataset.from_list(rows).map(goldfish_labels_map(CFG), batched=True)


def _sft_trainer(tokenizer, model, ds, out, **config):
    from trl import SFTConfig, SFTTrainer

    return SFTTrainer(
        model=model, train_dataset=ds, processing_class=tokenizer,
        args=SFTConfig(output_dir=str(out), max_steps=2, per_device_train_batch_size=4, report_to=[], use_cpu=True,
                       disable_tqdm=True, save_strategy="no", learning_rate=1e-3, **config),
    )


def test_trl_sft_recipe_assistant_only(tokenizer, tmp_path):
    """Recipe: tokenize chats with the assistant mask, goldfish the labels with datasets.map, SFTTrainer."""
    rows, ds = _goldfish_chats(tokenizer)
    trainer = _sft_trainer(tokenizer, micro_model(tokenizer), ds, tmp_path)
    batch = next(iter(trainer.get_train_dataloader()))
    sup_before = torch.tensor([l != -100 for r in rows[:4] for l in r["labels"][1:]])
    for r, lab in zip(rows[:4], ds["labels"][:4]):
        lab = torch.tensor(lab)
        assistant = torch.tensor(r["labels"]) != -100
        assert (lab[~assistant] == -100).all()  # never supervises a prompt token
        assert 0.15 < (lab[assistant] == -100).float().mean() < 0.35  # drops ~1/4 among assistant tokens
    assert (batch["labels"] != -100).sum() < sup_before.sum()  # TRL trains on the goldfished labels as given
    trainer.train()


def _loss_and_grads(model, loss_fn):
    model.zero_grad()
    loss = loss_fn()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_goldfish_labels_through_trl_fused_head_give_the_goldfish_loss(tokenizer, tmp_path):
    """TRL 1.16's SFTTrainer always computes its loss with its fused LM head (trl add_fused_lm_head);
    on goldfish labels that is the goldfish loss: same value and gradients as full logits."""
    _, ds = _goldfish_chats(tokenizer, n=4)
    model = micro_model(tokenizer)
    trainer = _sft_trainer(tokenizer, model, ds, tmp_path)
    batch = next(iter(trainer.get_train_dataloader()))
    assert (batch["labels"] != -100).sum() == sum(sum(x != -100 for x in row) for row in ds["labels"])  # the goldfish labels, all 4 rows
    assert hasattr(model.forward, "__wrapped__")  # TRL's fused forward is in place
    fused, fused_grads = _loss_and_grads(model, lambda: trainer.compute_loss(model, dict(batch)))
    full, full_grads = _loss_and_grads(model, lambda: causal_lm_loss(
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, batch["labels"]))
    assert torch.allclose(fused, full, rtol=1e-5, atol=0)
    assert_grads_close(fused_grads, full_grads)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="Liger's fused linear cross-entropy needs Triton on a CUDA device")
def test_goldfish_labels_through_liger_fused_linear_cross_entropy_give_the_goldfish_loss(tokenizer):
    """``use_liger_kernel`` (HF Trainer; what it applies, here directly) patches the model with Liger's
    fused linear cross-entropy, which reads the labels it is given: on goldfish labels, the goldfish
    loss (the reference: full logits from the same patched model, called without labels)."""
    pytest.importorskip("liger_kernel")
    from transformers.integrations.liger import apply_liger_kernel

    model = micro_model(tokenizer).cuda()
    apply_liger_kernel(model, {"fused_linear_cross_entropy": True})
    model.train()
    batch = {k: v.cuda() for k, v in GoldfishCollator(seq2seq_collator(tokenizer), CFG)(text_examples(tokenizer, n=4, prompt=5)).items()}
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    full, full_grads = _loss_and_grads(model, lambda: causal_lm_loss(model(**inputs).logits, batch["labels"]))
    liger, liger_grads = _loss_and_grads(model, lambda: model(**inputs, labels=batch["labels"]).loss)
    assert torch.allclose(liger, full, rtol=1e-5, atol=0)
    assert_grads_close(liger_grads, full_grads)


def run_one_and_two_ranks(worker: str, tmp_path, single_args: list[str], rank_args: list[str]) -> tuple[dict, dict]:
    """Run tests/``worker`` in one process and as 2 ranks under torchrun; their saved result.pt files."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    script = str(Path(__file__).parent / worker)
    single = subprocess.run([sys.executable, script, str(tmp_path / "single"), *single_args], env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    ranks = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", script,
         str(tmp_path / "ranks"), *rank_args],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert ranks.returncode == 0, ranks.stderr[-3000:]
    return torch.load(tmp_path / "single" / "result.pt"), torch.load(tmp_path / "ranks" / "result.pt")


@pytest.mark.slow
def test_ddp_two_processes_match_one_process(tmp_path):
    a, b = run_one_and_two_ranks("ddp_worker.py", tmp_path, ["4"], ["2"])
    assert b["world_size"] == 2 and a["world_size"] == 1
    assert a["losses"] and len(a["losses"]) == len(b["losses"])
    for x, y in zip(a["losses"], b["losses"]):
        assert math.isclose(x, y, rel_tol=1e-4)
    for name in a["weights"]:
        assert torch.allclose(a["weights"][name], b["weights"][name], atol=1e-5), name
    assert torch.equal(a["masked_labels"], b["masked_labels"])


@pytest.mark.slow
@pytest.mark.parametrize("tying", ["tied", "untied", "lora-head"])
def test_fsdp2_tiled_head_matches_full_logits_in_one_process(tmp_path, tying):
    """The LM head in tiles of kept positions under torch FSDP2 (2 ranks, gloo, parameters sharded;
    an untied lm_head is its own FSDP unit, resharded after its forward; with LoRA on it, the tiles
    call the adapted module) gives the same losses and weights after 3 SGD steps as full logits in
    one process."""
    a, b = run_one_and_two_ranks("fsdp_worker.py", tmp_path, ["full", tying], ["tiled", tying])
    assert b["world_size"] == 2 and not any(a["sharded"].values()) and all(b["sharded"].values())
    assert any(n.endswith("lm_head.weight") or n.endswith("lm_head.base_layer.weight") for n in b["sharded"]) == (tying != "tied")
    assert len(a["losses"]) == len(b["losses"]) == 3 and a["losses"][-1] < a["losses"][0]
    for x, y in zip(a["losses"], b["losses"]):
        assert math.isclose(x, y, rel_tol=1e-5)
    assert a["weights"].keys() == b["weights"].keys()
    for name in a["weights"]:
        assert torch.allclose(a["weights"][name], b["weights"][name], atol=1e-5), name
