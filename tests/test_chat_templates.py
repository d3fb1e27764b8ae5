"""Assistant-only labels on real-style chat templates, checked token by token."""

import pytest
from chat_styles import STYLES, chat_tokenizer, end_of_turn

from goldfish.data import tokenize_document
from goldfish.data.chat import chat_labels

CONVERSATION = [
    {"role": "user", "content": "Where is my order #4411?"},
    {"role": "assistant", "content": "It left our warehouse in Denver yesterday.\n\nItem tracking: ZX-19."},
    {"role": "user", "content": "Thanks! And who do I call about billing?"},
    {"role": "assistant", "content": "Call +1 (415) 555-0199, weekdays 9-5."},
]
STYLE_NAMES = [s for s in STYLES if s != "rewriting"]


def _runs(labels):
    runs, start = [], None
    for i, lab in enumerate([*labels, -100]):
        if lab != -100 and start is None:
            start = i
        elif lab == -100 and start is not None:
            runs.append((start, i))
            start = None
    return runs


@pytest.mark.parametrize("style", STYLE_NAMES)
def test_each_assistant_turn_is_its_content_plus_end_of_turn(style):
    tok = chat_tokenizer(style)
    ids, labels = tokenize_document({"messages": CONVERSATION}, tok)
    assert ids == tok(tok.apply_chat_template(CONVERSATION, tokenize=False), add_special_tokens=False)["input_ids"]
    runs = _runs(labels)
    replies = [m["content"] for m in CONVERSATION if m["role"] == "assistant"]
    eot = tok.convert_tokens_to_ids(end_of_turn(style))
    assert len(runs) == len(replies)
    for (a, b), reply in zip(runs, replies):
        assert labels[a:b] == ids[a:b]
        # token by token: the reply tokenized on its own, then the end-of-turn token
        assert ids[a:b] == tok(reply, add_special_tokens=False)["input_ids"] + [eot], style
        # (Metaspace decoding shows a space before a newline piece: compare words)
        assert tok.decode(ids[a:b]).split() == (reply + end_of_turn(style)).split()


@pytest.mark.parametrize("style", ["chatml", "mistral", "gemma", "phi3", "generation"])
def test_last_turn_only_and_message_level_opt_out(style):
    tok = chat_tokenizer(style)
    ids, last = tokenize_document({"messages": CONVERSATION}, tok, assistant_turns="last")
    _, every = tokenize_document({"messages": CONVERSATION}, tok)
    assert _runs(last) == _runs(every)[1:]
    opted = [dict(m) for m in CONVERSATION]
    opted[3]["train"] = False
    _, first_only = tokenize_document({"messages": opted}, tok)
    assert _runs(first_only) == _runs(every)[:1]
    opted[1]["train"] = False
    with pytest.raises(ValueError, match="no assistant turn to train on"):
        tokenize_document({"messages": opted}, tok)


def test_default_system_prompt_is_never_supervised():
    tok = chat_tokenizer("chatml")
    ids, labels = tokenize_document({"messages": CONVERSATION[:2]}, tok)
    assert "You are a helpful assistant." in tok.decode(ids)
    assert "helpful" not in tok.decode([t for t in labels if t != -100])


def test_template_that_rewrites_history_fails_naming_the_turn():
    tok = chat_tokenizer("rewriting")
    conv = [dict(m) for m in CONVERSATION]
    conv[1]["content"] = "Let me look it up.</think>It left Denver yesterday."
    with pytest.raises(ValueError, match="assistant turn 1: the chat template renders the conversation differently"):
        tokenize_document({"messages": conv}, tok)
    ids, labels = tokenize_document({"messages": conv}, tok, assistant_turns="last")  # the last turn is never rewritten
    assert tok.decode([t for t in labels if t != -100]) == CONVERSATION[3]["content"] + "<|im_end|>"


@pytest.mark.parametrize("style", ["chatml", "mistral", "gemma"])
def test_prompt_completion_formats(style):
    tok = chat_tokenizer(style)
    ids, labels = tokenize_document({"prompt": "The capital of France is", "completion": " Paris."}, tok)
    n = len(tok("The capital of France is", add_special_tokens=False)["input_ids"])
    assert labels[:n] == [-100] * n and labels[n:] == ids[n:] and ids[-1] == tok.eos_token_id
    conv = {"prompt": CONVERSATION[:3], "completion": CONVERSATION[3:]}
    ids, labels = tokenize_document(conv, tok)
    full_ids, full_labels = tokenize_document({"messages": CONVERSATION}, tok)
    assert ids == full_ids and _runs(labels) == _runs(full_labels)[1:]


def test_generation_prompt_that_is_not_how_replies_render_is_refused():
    """The render with the generation prompt must be a text prefix of the render with the reply."""
    tok = chat_tokenizer("chatml")
    tok.chat_template = ("{%- for m in messages -%}{{- m['role'] + ':' + m['content'] + '<|im_end|>' -}}{%- endfor -%}"
                         "{%- if add_generation_prompt -%}{{- 'assistant> ' -}}{%- endif -%}")
    with pytest.raises(ValueError, match="assistant turn 1: the chat template renders the conversation differently"):
        chat_labels([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yes"}], tok)
