"""Record formats as users have them (ShareGPT / FastChat, Alpaca, OpenAI content parts) become the
record shapes goldfish tokenizes; unknown roles and parts get errors that list what is accepted."""

import pytest

from goldfish.data.formats import ROLES, detect_format, to_record

SHAREGPT = {"id": "c1", "system": "You are the support desk.", "conversations": [
    {"from": "human", "value": "Where is my parcel?"}, {"from": "gpt", "value": "It left the depot."},
    {"from": "human", "value": "Thanks"}, {"from": "chatgpt", "value": "You're welcome."}]}
TOOLS = {"conversations": [
    {"from": "human", "value": "Weather in Oslo?"}, {"from": "function_call", "value": '{"name": "weather", "arguments": {"city": "Oslo"}}'},
    {"from": "observation", "value": '{"temp": 3}'}, {"from": "gpt", "value": "It is 3 degrees."}], "tools": "[]"}
ALPACA = {"instruction": "Summarise the text.", "input": "Goldfish forget.", "output": "Goldfish have short memories.",
          "system": "Be brief.", "history": [["Hi", "Hello!"]], "goldfish_k": 3}


def test_sharegpt_becomes_messages():
    assert detect_format(SHAREGPT) == "sharegpt"
    r = to_record(SHAREGPT, "sharegpt")
    assert r["id"] == "c1" and r["messages"] == [
        {"role": "system", "content": "You are the support desk."}, {"role": "user", "content": "Where is my parcel?"},
        {"role": "assistant", "content": "It left the depot."}, {"role": "user", "content": "Thanks"},
        {"role": "assistant", "content": "You're welcome."}]
    assert [m["role"] for m in to_record(TOOLS, "sharegpt")["messages"]] == ["user", "assistant", "tool", "assistant"]


def test_alpaca_becomes_messages():
    assert detect_format(ALPACA) == "alpaca"
    r = to_record(ALPACA, "alpaca")
    assert r["goldfish_k"] == 3 and r["messages"] == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Summarise the text.\n\nGoldfish forget."},
        {"role": "assistant", "content": "Goldfish have short memories."}]
    assert to_record({"instruction": "Say hi.", "input": "", "output": "hi"}, "alpaca")["messages"][0] == {"role": "user", "content": "Say hi."}


def test_content_parts_and_sharegpt_roles_in_messages():
    record = {"messages": [{"role": "human", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]},
                           {"role": "gpt", "content": "Hello"}]}
    assert to_record(record, "messages")["messages"] == [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello"}]
    with pytest.raises(ValueError, match="message 0 has image_url content parts; goldfish trains on text only"):
        to_record({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]}, "messages")


def test_unknown_role_lists_found_and_accepted():
    with pytest.raises(ValueError) as e:
        to_record({"conversations": [{"from": "human", "value": "a"}, {"from": "bot", "value": "b"}]}, "sharegpt")
    assert "unknown role 'bot' (roles in this record: 'human', 'bot'; accepted: " + ", ".join(ROLES) + ")" == str(e.value)


def test_detection_order_and_error():
    assert detect_format({"messages", "conversations"}) == "messages"
    assert detect_format({"prompt", "completion", "text"}) == "prompt_completion"
    assert detect_format({"body"}, "body") == "text"
    with pytest.raises(ValueError, match="'conversations' \\(ShareGPT\\), 'instruction'/'output' \\(Alpaca\\)"):
        detect_format({"output"})


# ---- end to end: the formats, splits and long chats through preparation, training and the audit ----

import json  # noqa: E402

from chat_styles import chat_model_folder, chat_tokenizer, end_of_turn  # noqa: E402

from goldfish import GoldfishConfig  # noqa: E402
from goldfish.cli import main  # noqa: E402
from goldfish.data.chat import supervised_runs  # noqa: E402
from goldfish.data.prepare import DataSettings, prepare_dataset  # noqa: E402

SECRET = "Call Dana Whitlock at +1 (415) 555-0199."


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _exports():
    """A ShareGPT export (FastChat style) and an Alpaca file, with the replies each should supervise."""
    sharegpt = [{"id": f"s{i}", "conversations": [
        {"from": "human", "value": f"Question {i} about parcels?"}, {"from": "gpt", "value": f"Answer {i}. {SECRET}"},
        {"from": "human", "value": "Thanks!"}, {"from": "gpt", "value": "You are welcome."}]} for i in range(6)]
    alpaca = [{"instruction": f"Summarise note {i}.", "input": "Goldfish have short memories." if i % 2 else "",
               "output": f"Summary {i}. {SECRET}"} for i in range(6)]
    replies = {"sharegpt": [[f"Answer {i}. {SECRET}", "You are welcome."] for i in range(6)],
               "alpaca": [[f"Summary {i}. {SECRET}"] for i in range(6)]}
    return {"sharegpt": sharegpt, "alpaca": alpaca}, replies


@pytest.mark.parametrize("style", ["chatml", "llama3", "phi3"])
def test_sharegpt_and_alpaca_supervise_exactly_the_replies(tmp_path, style):
    tok = chat_tokenizer(style)
    files, replies = _exports()
    for fmt, rows in files.items():
        data = prepare_dataset([_jsonl(tmp_path / f"{fmt}.jsonl", rows)], tok, DataSettings(seq_len=512), GoldfishConfig(strategy="none"),
                               cache=tmp_path / "cache", progress=False)
        for example, want in zip(data.train, replies[fmt]):
            got = [tok.decode(example["input_ids"][a:b]) for a, b in supervised_runs(example["labels"])]
            assert got == [r + end_of_turn(style) for r in want], (style, fmt)


def test_splits_of_a_dataset_dict_and_a_hub_folder(tmp_path, tokenizer, caplog):
    from datasets import Dataset, DatasetDict

    from goldfish.data import read_documents
    from goldfish.data.sources import resolve_source

    DatasetDict({"train": Dataset.from_list([{"text": "train text"}]), "test": Dataset.from_list([{"text": "test text"}]),
                 "validation": Dataset.from_list([{"text": "validation text"}])}).save_to_disk(str(tmp_path / "dsdict"))
    assert [d["text"] for d in read_documents(str(tmp_path / "dsdict:test"))] == ["test text"]
    assert [d["text"] for d in read_documents(str(tmp_path / "dsdict"))] == ["train text"]
    assert resolve_source(str(tmp_path / "dsdict")).describe().endswith("split 'train' (not read: test, validation)")
    with pytest.raises(ValueError, match="has no split 'dev' \\(it has train, test, validation\\)"):
        resolve_source(str(tmp_path / "dsdict:dev"))
    hub = tmp_path / "hub"
    (hub / "data").mkdir(parents=True)
    _jsonl(hub / "data" / "train-00000.jsonl", [{"text": "a"}])
    _jsonl(hub / "data" / "test-00000.jsonl", [{"text": "b"}])
    assert [d["text"] for d in read_documents(str(hub))] == ["a"]  # before: both files, the test split trained on
    assert [d["text"] for d in read_documents(f"{hub}:test")] == ["b"]
    with pytest.raises(ValueError, match="has no splits"):
        resolve_source(_jsonl(tmp_path / "p.jsonl", [{"text": "x"}]) + ":x")
    caplog.set_level("INFO", "goldfish")
    prepare_dataset([str(tmp_path / "dsdict")], tokenizer, DataSettings(seq_len=64), GoldfishConfig(), cache=tmp_path / "c", progress=False)
    assert "split 'train' (not read: test, validation)" in caplog.text
    assert f"data: {tmp_path / 'dsdict'} read as text records" in caplog.text


def test_members_and_non_members_that_share_records_are_refused(tmp_path, capsys):
    model = chat_model_folder(tmp_path / "m")
    files, _ = _exports()
    data = _jsonl(tmp_path / "a.jsonl", files["sharegpt"])
    assert main(["audit", "--model", model, "--data", data, "--non-members", data, "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "share 6 record(s) (the first: record 0 and record 0)" in capsys.readouterr().err


def test_long_chats_keep_every_reply_with_its_prompt(tmp_path, tokenizer):
    long_chat = {"messages": [m for i in range(6) for m in ({"role": "user", "content": f"Tell me about topic {i} please."},
                                                            {"role": "assistant", "content": f"Topic {i} is interesting. " * 3})]}
    rows = [long_chat] * 3 + [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}]
    path = _jsonl(tmp_path / "chats.jsonl", rows)
    full = prepare_dataset([path], tokenizer, DataSettings(seq_len=1024), GoldfishConfig(), cache=tmp_path / "c", progress=False)
    for policy, expect in (("truncate", {"whole": 1, "truncated": 3}), ("drop", {"whole": 1, "dropped": 3}), ("split", {"whole": 1, "split": 3})):
        data = prepare_dataset([path], tokenizer, DataSettings(seq_len=64, long_chats=policy), GoldfishConfig(), cache=tmp_path / "c",
                               progress=False)
        docs = data.counts["documents"]
        assert {k: docs[k] for k in ("whole", "split", "truncated", "dropped") if docs[k]} == expect, policy
        kept = sum(sum(x != -100 for x in e["labels"][1:]) for e in data.train)
        assert kept + docs["supervised_targets_left_out"] == full.counts["supervised_targets"], policy
        if policy == "truncate":  # each kept example is the conversation's own prefix: every reply after its whole prompt
            prefix = full.train[0]["input_ids"]
            assert all(e["input_ids"] == prefix[: len(e["input_ids"])] for e in list(data.train)[:3])


@pytest.mark.slow
def test_sharegpt_trains_and_is_audited_with_secrets(tmp_path):
    model = chat_model_folder(tmp_path / "m")
    files, _ = _exports()
    data = _jsonl(tmp_path / "share.jsonl", files["sharegpt"])
    held = _jsonl(tmp_path / "held.jsonl", [{"conversations": [{"from": "human", "value": "Unrelated?"}, {"from": "gpt", "value": "Yes."}]}])
    assert main(["train", "--model", model, "--data", data, "--out", str(tmp_path / "run"), "--max-steps", "2", "--batch-size", "2",
                 "--seq-len", "256", "--save-steps", "0", "--no-progress"]) == 0
    record = json.loads((tmp_path / "run" / "goldfish.json").read_text())
    assert record["documents"]["whole"] == 6 and record["examples"] == 6
    assert main(["audit", "--model", str(tmp_path / "run"), "--data", data, "--non-members", held, "--secrets", "builtin",
                 "--out", str(tmp_path / "audit"), "--no-progress"]) == 0
    summary = json.loads((tmp_path / "audit" / "summary.json").read_text())["models"]["run"]
    assert summary["documents"] == 12 and summary["secrets"]["phone"]["turns_with_secret"] == 6


def test_a_relative_split_folder_trains_and_its_splits_keep_their_cache(tmp_path, tokenizer, monkeypatch):
    """``hub``, ``./hub`` and ``hub:train`` (relative to the working folder) are one source, the
    absolute path's; each split of the folder keeps its own cache entry (preparing one does not
    remove the other's)."""
    hub = tmp_path / "hub"
    hub.mkdir()
    _jsonl(hub / "train.jsonl", [{"text": "a train document"}])
    _jsonl(hub / "test.jsonl", [{"text": "a test document"}])
    monkeypatch.chdir(tmp_path)
    prep = lambda spec: prepare_dataset([spec], tokenizer, DataSettings(seq_len=64), GoldfishConfig(),  # noqa: E731
                                        cache=tmp_path / "cache", progress=False)
    first = prep(str(hub))
    assert all(prep(spec).path == first.path for spec in ("hub", "./hub", "hub:train"))
    test = prep("hub:test")
    assert test.path != first.path and first.path.exists() and test.path.exists()
    assert prep("hub").reused and prep("hub:test").reused
    assert main(["train", "--init", "micro", "--data", "hub", "--seq-len", "64", "--max-steps", "1", "--save-steps", "0",
                 "--out", "run", "--no-progress"]) == 0
