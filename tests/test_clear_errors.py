"""Bad input gives exit 2 and one line naming the file and the record (or line), never a traceback,
and nothing half written: chat messages without content or with content-part lists, tokenizers
without offsets, audit records without text, a suffix as long as the model's context, a read-only
or foreign --out, binary or empty --protect files, ``"goldfish": "false"``."""

import json
from pathlib import Path

import pytest

from chat_styles import chat_model_folder
from helpers import read_only_folder
from goldfish.cli import main


def _jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _error(capsys, command: str) -> str:
    """The one error line of a CLI run (and no traceback)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(f"goldfish {command}: error: ")]
    assert len(lines) == 1, err
    return lines[0]


def _chat(reply="fine, thanks") -> dict:
    return {"messages": [{"role": "user", "content": "How are you?"}, {"role": "assistant", "content": reply}]}


def _train(tmp_path, data, *extra) -> int:
    return main(["train", "--data", str(data), "--out", str(tmp_path / "out"), "--max-steps", "1", "--no-progress",
                 "--data-cache", str(tmp_path / "cache"), *extra])


@pytest.fixture(scope="module")
def chatml_model(tmp_path_factory):
    return chat_model_folder(tmp_path_factory.mktemp("chatml") / "model", "chatml")


NO_CONTENT = {"messages": [{"role": "user"}, {"role": "assistant", "content": "hello"}]}
IMAGE = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image", "url": "x.png"}]},
                     {"role": "assistant", "content": "hello"}]}

TEXT_NUMBER = {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}, {"role": "assistant", "content": "hi"}]}


@pytest.mark.parametrize("template", ["generation tags", "no generation tags"])
@pytest.mark.parametrize("record,message", [
    (NO_CONTENT, "the chat template failed on the conversation up to message 1: "),
    (IMAGE, "message 0 has image content parts; goldfish trains on text only"),
    (TEXT_NUMBER, "message 0: content part 0 has a 'text' that is not a string (5)"),
])
def test_bad_chat_messages_name_file_and_record(tmp_path, capsys, chatml_model, template, record, message):
    data = _jsonl(tmp_path / "chats.jsonl", [_chat(), _chat(), record])
    model = ["--init", "micro"] if template == "generation tags" else ["--model", chatml_model]  # the embedded template has tags
    assert _train(tmp_path, data, *model) == 2
    line = _error(capsys, "train")
    assert f"{data}: record 2: {message}" in line
    assert record is not NO_CONTENT or "(message 0 has no 'content')" in line
    assert not (tmp_path / "out").exists()


def test_goldfish_false_as_a_string_is_an_error_not_ignored(tmp_path, capsys):
    data = _jsonl(tmp_path / "d.jsonl", [{"text": "kept " * 20}, {"text": "opted out? " * 20, "goldfish": "false"}])
    assert _train(tmp_path, data, "--init", "micro") == 2
    assert f"{data}: record 1: 'goldfish' must be true or false (a JSON boolean), got 'false'" in _error(capsys, "train")


@pytest.mark.parametrize("command", ["mask", "train"])
@pytest.mark.parametrize("content,message", [
    (b"\x89PNG\r\n\x1a\n\x00\x00", ":1: not UTF-8 (byte 0x89 at offset 0)"),
    (b"", " holds no secret (it is empty or blank)"),
    (b"\n  \n\n", " holds no secret (it is empty or blank)"),
])
def test_protect_files_without_secrets_name_the_file(tmp_path, capsys, command, content, message):
    secrets = tmp_path / "secrets.png"
    secrets.write_bytes(content)
    if command == "mask":
        assert main(["mask", "Call Dana at +1 415 555 0199", "--protect", str(secrets)]) == 2
    else:
        assert _train(tmp_path, _jsonl(tmp_path / "d.jsonl", [{"text": "hello " * 20}]), "--init", "micro", "--protect", str(secrets)) == 2
        assert not (tmp_path / "out").exists()
    assert f"{secrets}{message}" in _error(capsys, command)


def _python_tokenizer():
    from transformers import ByT5Tokenizer

    return ByT5Tokenizer()


def test_a_tokenizer_without_offsets_is_refused_for_protection_and_mask(tmp_path, capsys):
    from goldfish import GoldfishConfig
    from goldfish.data.prepare import DataSettings, prepare_dataset
    from goldfish.secrets import parse_secret

    tok = _python_tokenizer()
    data = _jsonl(tmp_path / "d.jsonl", [{"text": "Dana Whitlock called"}])
    with pytest.raises(ValueError, match=r"protected spans .*: these need the tokenizer's character offsets, and ByT5Tokenizer"):
        prepare_dataset([str(data)], tok, DataSettings(seq_len=64), GoldfishConfig(), [parse_secret("Dana")], cache=tmp_path / "c",
                        progress=False)
    assert not [p for p in (tmp_path / "c").iterdir()]  # no entry, no temp folder
    tok.save_pretrained(tmp_path / "byt5")
    assert main(["mask", "Dana Whitlock called", "--tokenizer", str(tmp_path / "byt5")]) == 2
    assert "ByT5Tokenizer (a Python tokenizer) gives none; use a fast tokenizer" in _error(capsys, "mask")


def _audit(memorized, data, out, *extra) -> int:
    model, _, _ = memorized
    return main(["audit", "--model", str(model), "--data", str(data), "--out", str(out), "--suffix-len", "16", "--no-progress", *extra])


def test_audit_record_without_text_names_file_and_record(tmp_path, capsys, memorized):
    data = _jsonl(tmp_path / "docs.jsonl", [{"id": "a", "text": "one two three " * 20}, {"id": "b", "text": "four " * 40},
                                            {"id": "c", "body": "no text here"}])
    assert _audit(memorized, data, tmp_path / "audit") == 2
    assert f"{data}: record 2: no 'text' string (got None)" in _error(capsys, "audit")
    assert not (tmp_path / "audit").exists()


def test_audit_suffix_as_long_as_the_context_is_refused(tmp_path, capsys, memorized):
    _, members, _ = memorized
    assert _audit(memorized, members, tmp_path / "audit", "--suffix-len", "128") == 2  # the model reads 128 positions
    assert "--suffix-len 128: the model 'model' reads at most 128 tokens" in _error(capsys, "audit")
    assert not (tmp_path / "audit").exists()


def test_audit_out_that_cannot_be_written_or_holds_other_files_is_refused_first(tmp_path, capsys, memorized):
    _, members, _ = memorized
    read_only = read_only_folder(tmp_path) / "audit"
    assert _audit(memorized, members, read_only) == 2
    assert f"--out {read_only}: cannot write in {read_only.parent}" in _error(capsys, "audit")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert _audit(memorized, members, mine) == 2
    assert "holds files that are not an audit's (notes.txt)" in _error(capsys, "audit")
    assert (mine / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("where", ["the model", "inside the model", "above the model"])
def test_an_out_that_is_or_holds_the_model_is_refused_and_nothing_is_removed(tmp_path, capsys, where):
    model = Path(chat_model_folder(tmp_path / "runs" / "model", "chatml"))
    (model / "goldfish.json").write_text("{}\n")  # a previous goldfish run's output: --overwrite would clear it
    before = sorted(p.name for p in model.iterdir())
    out = {"the model": model, "inside the model": model / "again", "above the model": model.parent}[where]
    data = _jsonl(tmp_path / "chats.jsonl", [_chat()] * 4)
    assert main(["train", "--model", str(model), "--data", str(data), "--out", str(out), "--overwrite", "--lora",
                 "--max-steps", "1", "--no-progress", "--data-cache", str(tmp_path / "cache")]) == 2
    line = _error(capsys, "train")
    assert f"--out {out}" in line and f"--model {model}" in line, line
    assert sorted(p.name for p in model.iterdir()) == before


CUSTOM_CODE = """
import os, pathlib
pathlib.Path(os.environ["GOLDFISH_TEST_RAN"]).write_text("the folder's own code ran")  # transformers runs a copy of the file
from transformers import LlamaConfig, LlamaForCausalLM
class CustomConfig(LlamaConfig):
    model_type = "goldfish_custom"
class CustomModel(LlamaForCausalLM):
    config_class = CustomConfig
"""


@pytest.mark.parametrize("command", ["train", "audit", "eval"])
def test_a_model_with_its_own_code_is_refused_without_asking_unless_trusted(tmp_path, monkeypatch, chatml_model, command):
    import shutil
    import subprocess
    import sys

    model = tmp_path / "custom"
    shutil.copytree(chatml_model, model)
    config = json.loads((model / "config.json").read_text())
    config |= {"model_type": "goldfish_custom", "auto_map": {"AutoConfig": "modeling_custom.CustomConfig",
                                                             "AutoModelForCausalLM": "modeling_custom.CustomModel"}}
    (model / "config.json").write_text(json.dumps(config))
    (model / "modeling_custom.py").write_text(CUSTOM_CODE)
    data = _jsonl(tmp_path / "chats.jsonl", [_chat()] * 4)
    ran = tmp_path / "RAN"
    monkeypatch.setenv("GOLDFISH_TEST_RAN", str(ran))
    argv = {"train": ["--data", str(data), "--max-steps", "1", "--no-progress", "--data-cache", str(tmp_path / "cache")],
            "audit": ["--data", str(data), "--prefix-len", "4", "--suffix-len", "4"],
            "eval": ["--limit", "2"]}[command]
    run = subprocess.run([sys.executable, "-m", "goldfish.cli", command, "--model", str(model), "--out", str(tmp_path / "out"),
                          *argv], input="y\n", capture_output=True, text=True, timeout=300)  # "y" to a prompt, were there one
    assert run.returncode == 2 and "Traceback" not in run.stderr and "[y/N]" not in run.stdout + run.stderr, run.stderr
    assert not ran.exists()
    assert (f"goldfish {command}: error: --model {model}: the folder holds its own model code (auto_map); goldfish runs "
            "it only with --trust-remote-code") in run.stderr, run.stderr
    assert not (tmp_path / "out").exists()
    if command == "train":  # trusted: the folder's class is the one trained
        assert main(["train", "--model", str(model), "--out", str(tmp_path / "out"), *argv, "--trust-remote-code"]) == 0
        assert ran.exists()
        assert json.loads((tmp_path / "out" / "config.json").read_text())["architectures"] == ["CustomModel"]


LOOPING_TEMPLATE = ("{% for m in messages %}{% for a in range(3000) %}{% for b in range(3000) %}{% endfor %}{% endfor %}"
                    "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}")


def test_a_chat_template_that_loops_is_stopped_with_a_clear_error(tmp_path, capsys, chatml_model, monkeypatch):
    import time

    import goldfish.data.chat

    monkeypatch.setattr(goldfish.data.chat, "RENDER_TIME_LIMIT_S", 0.2)
    template = tmp_path / "looping.jinja"
    template.write_text(LOOPING_TEMPLATE)
    data = _jsonl(tmp_path / "chats.jsonl", [_chat()] * 2)
    start = time.time()
    assert _train(tmp_path, data, "--model", chatml_model, "--chat-template", str(template)) == 2
    assert time.time() - start < 30
    line = _error(capsys, "train")
    assert f"{data}: record 0: the chat template took over 0.2 s to render the conversation up to message " in line, line
    assert not (tmp_path / "out").exists()


def test_a_conversation_opening_with_a_reply_names_the_opening_turn(tmp_path, capsys, chatml_model):
    """A template that reads ``messages[0]`` cannot render the (empty) prompt before an opening reply."""
    template = tmp_path / "first.jinja"
    template.write_text("{% if messages[0]['role'] == 'system' %}S{% endif %}{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
                        "{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    opening = {"conversations": [{"from": "gpt", "value": "Hello, how can I help?"}, {"from": "human", "value": "hi"},
                                 {"from": "gpt", "value": "Sure."}]}
    data = _jsonl(tmp_path / "chats.jsonl", [opening])
    assert _train(tmp_path, data, "--model", chatml_model, "--chat-template", str(template)) == 2
    line = _error(capsys, "train")
    assert f"{data}: record 0: the chat template failed on the prompt before message 0 (the conversation opens with an " \
           "assistant turn;" in line and "message -1" not in line


@pytest.mark.parametrize("record", [{"text": "x" * 101}, _chat("y" * 90)])
def test_a_record_over_the_size_bound_is_refused_before_it_is_tokenized(tmp_path, capsys, monkeypatch, record):
    import goldfish.data.tokenize

    monkeypatch.setattr(goldfish.data.tokenize, "MAX_RECORD_CHARS", 100)
    data = _jsonl(tmp_path / "docs.jsonl", [{"text": "short"}, record] if "text" in record else [_chat(), record])
    assert _train(tmp_path, data, "--init", "micro") == 2
    held = 101 if "text" in record else 90 + len("How are you?") + len("user") + len("assistant")  # every string of it
    assert f"{data}: record 1: the record holds {held} characters of text; goldfish reads records of up to 100 (the " \
           "tokenizer holds one whole in memory): split it into several records" in _error(capsys, "train")
    assert not (tmp_path / "out").exists()


CUSTOM_TOKENIZER = """
import os, pathlib
pathlib.Path(os.environ["GOLDFISH_TEST_RAN"]).write_text("the folder's own code ran")
from transformers import PreTrainedTokenizerFast
class CustomTokenizer(PreTrainedTokenizerFast):
    pass
"""


def test_goldfish_mask_runs_a_tokenizer_folder_s_own_code_only_when_trusted(tmp_path, monkeypatch, capsys, chatml_model):
    import shutil

    folder = tmp_path / "custom"
    shutil.copytree(chatml_model, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config |= {"tokenizer_class": "CustomTokenizer", "auto_map": {"AutoTokenizer": [None, "tokenization_custom.CustomTokenizer"]}}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "tokenization_custom.py").write_text(CUSTOM_TOKENIZER)
    ran = tmp_path / "RAN"
    monkeypatch.setenv("GOLDFISH_TEST_RAN", str(ran))
    assert main(["mask", "a sentence to mask", "--tokenizer", str(folder), "--plain"]) == 2
    assert not ran.exists()
    assert (f"goldfish mask: error: --tokenizer {folder}: the folder holds its own model code (auto_map); goldfish runs it "
            "only with --trust-remote-code") in capsys.readouterr().err
    assert main(["mask", "a sentence to mask", "--tokenizer", str(folder), "--trust-remote-code", "--plain"]) == 0
    assert ran.exists() and "dropped 1 of 6 targets" in capsys.readouterr().out
