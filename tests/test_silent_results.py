"""Inputs that used to give silently wrong results: each is now an error naming the file and record,
or a warning that says what happened."""

import json

import pytest

from goldfish import GoldfishConfig
from goldfish.data.prepare import DataSettings, prepare_dataset


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _chat(i, **flag):
    return {"messages": [{"role": "user", "content": f"Where is order {i}?"},
                         {"role": "assistant", "content": f"Order {i} ships Monday.", **flag}]}


def _prepare(paths, tokenizer, tmp_path, **settings):
    return prepare_dataset(paths, tokenizer, DataSettings(seq_len=64, **settings), GoldfishConfig(), cache=tmp_path / "cache",
                           progress=False)


@pytest.mark.parametrize("value", ["false", 0, 1, "no"])
def test_a_train_flag_that_is_not_a_json_boolean_is_an_error_naming_file_and_record(tmp_path, tokenizer, value):
    chats = _jsonl(tmp_path / "chats.jsonl", [_chat(0), _chat(1, train=value), _chat(2)])
    with pytest.raises(ValueError, match=rf"chats.jsonl: record 1: message 1: 'train' must be true or false \(a JSON "
                                         rf"boolean\), got {value!r}"):
        _prepare([chats], tokenizer, tmp_path)
    sharegpt = _jsonl(tmp_path / "sharegpt.jsonl", [{"conversations": [{"from": "human", "value": "Hi"},
                                                                      {"from": "gpt", "value": "Hello.", "train": value}]}])
    with pytest.raises(ValueError, match=r"sharegpt.jsonl: record 0: conversations\[1\]: 'train' must be true or false"):
        _prepare([sharegpt], tokenizer, tmp_path)


def test_a_json_false_still_opts_a_turn_out(tmp_path, tokenizer):
    both = _prepare([_jsonl(tmp_path / "a.jsonl", [_chat(0)])], tokenizer, tmp_path)
    off = _prepare([_jsonl(tmp_path / "b.jsonl", [{"messages": _chat(0)["messages"] + _chat(1, train=False)["messages"]}])],
                   tokenizer, tmp_path)
    assert off.counts["supervised_targets"] == both.counts["supervised_targets"]


@pytest.mark.parametrize("values", [[4, "8"], ["4", "8"], ["8", 4.5]])
def test_goldfish_k_strings_are_refused_alone_or_mixed_with_numbers(tmp_path, tokenizer, values):
    rows = [{"text": f"document {i} about order {i}", "goldfish_k": k} for i, k in enumerate(values)]
    data = _jsonl(tmp_path / "docs.jsonl", rows)
    string_at = next(i for i, k in enumerate(values) if isinstance(k, str))
    match = (rf"docs.jsonl:{string_at + 1}: goldfish_k must be a JSON number" if any(not isinstance(k, str) for k in values)
             else rf"docs.jsonl: record {string_at}: goldfish_k must be a number >= 2, got '4'")
    with pytest.raises(ValueError, match=match):
        _prepare([data], tokenizer, tmp_path)
    numbers = _jsonl(tmp_path / "numbers.jsonl", [{**r, "goldfish_k": 8} for r in rows] + [{"text": 'a "goldfish_k": "8" quote'}])
    assert _prepare([numbers], tokenizer, tmp_path).counts["examples"] == len(rows) + 1


@pytest.mark.parametrize("n", ["0", "-1", "-70"])
def test_audit_max_documents_below_one_is_an_error(tmp_path, capsys, n):
    from chat_styles import chat_model_folder

    from goldfish.cli import main

    model = chat_model_folder(tmp_path / "model")
    data = _jsonl(tmp_path / "chats.jsonl", [_chat(i) for i in range(3)])
    assert main(["audit", "--model", model, "--data", data, "--max-documents", n, "--out", str(tmp_path / "audit")]) == 2
    assert f"goldfish audit: error: --max-documents must be >= 1, got {n}" in capsys.readouterr().err
    assert not (tmp_path / "audit").exists()


def test_a_split_folder_with_a_file_in_no_split_names_it(tmp_path, tokenizer, capsys):
    from goldfish.cli import main
    from goldfish.data.sources import resolve_source

    folder = tmp_path / "chats"
    folder.mkdir()
    for name in ("train", "test"):
        _jsonl(folder / f"{name}.jsonl", [_chat(1)])
    _jsonl(folder / ".hidden.jsonl", [_chat(9)])  # hidden files are no data, as datasets has it
    assert [f.name for f in resolve_source(str(folder)).files] == ["train.jsonl"]
    _jsonl(folder / "extra_chats.jsonl", [_chat(2)])
    message = "extra_chats.jsonl in no split: the folder's names name the splits train, test"
    with pytest.raises(ValueError, match=message):
        resolve_source(str(folder))
    with pytest.raises(ValueError, match=message):
        resolve_source(f"{folder}:test")
    assert main(["train", "--init", "micro", "--data", str(folder), "--out", str(tmp_path / "out"), "--max-steps", "1"]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_empty_assistant_replies_are_counted_and_warned_about(tmp_path, tokenizer, caplog):
    rows = [_chat(i) for i in range(4)]
    rows[1]["messages"][1]["content"] = "  "
    rows[3]["messages"][1]["content"] = ""
    rows.append({"prompt": "Q?", "completion": ""})
    data = _prepare([_jsonl(tmp_path / "c.jsonl", rows[:4]), _jsonl(tmp_path / "p.jsonl", rows[4:])], tokenizer, tmp_path)
    assert data.counts["documents"]["empty_replies"] == 3
    assert "3 of 5 records have an assistant reply with no text: each is trained as the end-of-turn tokens only" in caplog.text
