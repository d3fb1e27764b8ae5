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
