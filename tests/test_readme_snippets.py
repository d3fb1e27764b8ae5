"""Every Python block of the README runs as pasted, on a micro Llama with a ChatML tokenizer: only the
names a reader brings (their model, tokenizer, data, loader, optimizer, training arguments) are bound."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from chat_styles import chat_model_folder
from datasets import Dataset
from helpers import sgd_args
from transformers import AutoModelForCausalLM, AutoTokenizer

from goldfish.data import tokenize_document

README = (Path(__file__).parent.parent / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)
CHATS = [{"messages": [{"role": "user", "content": f"Where is my order {n}?"},  # replies of different lengths
                       {"role": "assistant", "content": f"Order {n} ships on Monday" + "; a tracking link follows by email" * (n % 3)}]}
         for n in range(1000, 1008)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return chat_model_folder(tmp_path_factory.mktemp("readme") / "model", "chatml")


def _names(model_dir, out) -> dict:
    """What a reader of the README has before pasting: a model and tokenizer, chats, their tokenized
    dataset, a loader of padded batches, an optimizer and TrainingArguments."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    encoded = [tokenize_document(c, tokenizer) for c in CHATS]
    width = max(len(ids) for ids, _ in encoded)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in encoded])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in encoded])
    attention_mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in encoded])
    loader = [{"input_ids": input_ids[i:i + 4], "labels": labels[i:i + 4], "attention_mask": attention_mask[i:i + 4]} for i in (0, 4)]
    return {
        "model": model, "tokenizer": tokenizer, "chats": Dataset.from_list(CHATS),
        "ds": Dataset.from_list([{"input_ids": ids, "labels": lab} for ids, lab in encoded]),
        "loader": loader, "opt": torch.optim.SGD(model.parameters(), lr=0.1),
        "training_args": sgd_args(out / "trainer", batch_size=4, steps=2),
        "input_ids": input_ids, "labels": labels, "logits": torch.randn(*input_ids.shape, len(tokenizer)),
    }


def test_the_readme_has_its_python_blocks():
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs_as_pasted(index, model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks that write ("out") write here, and read "my-model" and "chats.jsonl" here
    shutil.copytree(model_dir, tmp_path / "my-model")
    (tmp_path / "chats.jsonl").write_text("".join(json.dumps(c) + "\n" for c in CHATS))
    names = _names(model_dir, tmp_path)
    if "goldfish.integrations.megatron" in BLOCKS[index]:  # a Megatron script's dataset: a real GPTDataset
        from megatron_data import tiny_train_ds

        names["train_ds"] = tiny_train_ds(tmp_path / "megatron")
    before = [p.detach().clone() for p in names["model"].parameters()]
    exec(compile(BLOCKS[index], f"README.md python block {index}", "exec"), names)
    if "loss" in names:
        assert torch.isfinite(names["loss"]).all()
    if "train_ds" in names:  # goldfish dropped targets from the Megatron sample's loss mask
        assert 0 < int((names["sample"]["loss_mask"] == 0).sum()) < len(names["sample"]["loss_mask"]) // 10
    if "model" in BLOCKS[index]:  # a training recipe: it trained the reader's model
        assert any(not torch.equal(a, b.detach()) for a, b in zip(before, names["model"].parameters()))
