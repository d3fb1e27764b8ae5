"""Named chat templates (--chat-template): each supervises exactly the replies and their end-of-turn
marker, on a tokenizer that had no template; a base model trains on chats with one."""

import json

import pytest
from helpers import micro_model

from goldfish.cli import main
from goldfish.data import tokenize_document
from goldfish.data.chat import supervised_runs
from goldfish.data.templates import CHAT_TEMPLATES, END_OF_TURN, apply_chat_template

CHAT = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Where is my parcel?"},
                     {"role": "assistant", "content": "It left the depot this morning."},
                     {"role": "user", "content": "And the invoice?"}, {"role": "assistant", "content": "Sent to your email."}]}


@pytest.fixture
def bare_tokenizer(tokenizer):
    from transformers import AutoTokenizer

    from goldfish.embedded.tiny import embedded_tokenizer_dir

    bare = AutoTokenizer.from_pretrained(embedded_tokenizer_dir())
    bare.chat_template = None
    return bare


@pytest.mark.parametrize("name", list(CHAT_TEMPLATES))
def test_named_template_supervises_replies_and_end_of_turn(bare_tokenizer, name):
    added = apply_chat_template(bare_tokenizer, name)
    assert set(added) <= set(bare_tokenizer.get_vocab())
    ids, labels = tokenize_document(CHAT, bare_tokenizer)
    end = END_OF_TURN.get(name, bare_tokenizer.eos_token)
    runs = [bare_tokenizer.decode(ids[a:b]) for a, b in supervised_runs(labels)]
    assert [r.strip() for r in runs] == ["It left the depot this morning." + end, "Sent to your email." + end]
    assert all(bare_tokenizer.convert_ids_to_tokens(ids[b - 1]) == end for _, b in supervised_runs(labels))
    prompt = bare_tokenizer.apply_chat_template(CHAT["messages"][:2], tokenize=False, add_generation_prompt=True)
    assert prompt.rstrip() in bare_tokenizer.apply_chat_template(CHAT["messages"][:3], tokenize=False)


def test_unknown_template_is_refused(tmp_path, capsys):
    assert main(["train", "--init", "micro", "--data", "x.jsonl", "--out", str(tmp_path / "o"), "--chat-template", "alpaca"]) == 2
    assert "neither a template name (chatml, llama3, vicuna_v1.1) nor a Jinja file" in capsys.readouterr().err


@pytest.mark.slow
def test_base_model_without_template_trains_on_chats(tmp_path, bare_tokenizer, capsys):
    model = micro_model(bare_tokenizer)
    model.save_pretrained(tmp_path / "base")
    bare_tokenizer.save_pretrained(tmp_path / "base")
    data = tmp_path / "chats.jsonl"
    data.write_text(json.dumps(CHAT) + "\n")
    assert main(["train", "--model", str(tmp_path / "base"), "--data", str(data), "--out", str(tmp_path / "run"),
                 "--max-steps", "1", "--seq-len", "64", "--no-progress"]) == 2  # no template: refused, says why
    assert "the tokenizer has no chat template to render conversations with; give one with --chat-template" in capsys.readouterr().err
    assert main(["train", "--model", str(tmp_path / "base"), "--data", str(data), "--out", str(tmp_path / "run"),
                 "--max-steps", "2", "--seq-len", "128", "--chat-template", "chatml", "--no-progress", "--save-steps", "0"]) == 0
    from transformers import AutoModelForCausalLM, AutoTokenizer

    saved = AutoTokenizer.from_pretrained(tmp_path / "run")
    assert saved.chat_template == CHAT_TEMPLATES["chatml"] and "<|im_end|>" in saved.get_vocab()
    trained = AutoModelForCausalLM.from_pretrained(tmp_path / "run")
    assert trained.get_input_embeddings().num_embeddings == len(saved)
    assert saved.convert_tokens_to_ids("<|im_end|>") in trained.generation_config.eos_token_id
