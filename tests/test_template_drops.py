"""Nothing of the user's data dropped silently by a chat template: every message's content must be in
the render (a template without a system branch, one that skips tool messages, one that keeps only the
last system message), counted per role, said once per run, recorded; --system-into-user folds system
prompts into the next user turn."""

import json
import logging

import pytest
from chat_styles import chat_model_folder, chat_tokenizer

from goldfish.cli import main
from goldfish.data.chat import drop_warnings, fold_system_into_user, tally_drops
from goldfish.data.tokenize import encode_record

# Phi-3's template as released: no system branch, so a system message renders as nothing
NO_SYSTEM = ("{% for m in messages %}{% if m['role']=='user' %}<|user|>\n{{m['content']}}<|end|>\n"
             "{% elif m['role']=='assistant' %}<|assistant|>\n{{m['content']}}<|end|>\n{% endif %}{% endfor %}"
             "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
# renders system, user and assistant messages, and skips tool messages
NO_TOOL = ("{% for m in messages %}{% if m['role'] != 'tool' %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endif %}"
           "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
# only the last system message survives (a template that sets one system slot in a loop)
LAST_SYSTEM = ("{% set ns = namespace(system='') %}{% for m in messages %}{% if m['role'] == 'system' %}"
               "{% set ns.system = m['content'] %}{% endif %}{% endfor %}{% if ns.system %}<|system|>\n{{ ns.system }}<|end|>\n"
               "{% endif %}{% for m in messages %}{% if m['role'] != 'system' %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n"
               "{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
SYSTEM = "You are Ana, the support agent of Acme Freight."


def _tokenizer(template):
    tok = chat_tokenizer("phi3")
    tok.chat_template = template
    return tok


def _sharegpt(i):
    return {"system": SYSTEM, "conversations": [{"from": "human", "value": f"Where is order {1000 + i}?"},
                                                {"from": "gpt", "value": f"Order {1000 + i} ships from depot {i % 7} on Monday."}]}


def _supervised_text(tok, encoded):
    return tok.decode([t for t in encoded.labels if t != -100])


def test_a_template_without_a_system_branch_drops_the_system_prompt_and_folding_keeps_it():
    tok = _tokenizer(NO_SYSTEM)
    plain = encode_record(_sharegpt(0), tok)
    assert plain.template_drops == {"system": True, "user": False, "assistant": False}
    assert SYSTEM not in tok.decode(plain.input_ids)
    folded = encode_record(_sharegpt(0), tok, system_into_user=True)
    assert folded.template_drops == {"user": False, "assistant": False}
    assert f"<|user|>\n{SYSTEM}\n\nWhere is order 1000?<|end|>" in tok.decode(folded.input_ids)
    # the same reply is supervised either way
    assert _supervised_text(tok, folded) == _supervised_text(tok, plain) == "Order 1000 ships from depot 0 on Monday.<|end|>"


def test_a_template_that_skips_tool_messages_is_reported_for_tool_only():
    tok = _tokenizer(NO_TOOL)
    record = {"messages": [{"role": "system", "content": "Use the tracker."}, {"role": "user", "content": "Where is 12?"},
                           {"role": "assistant", "content": "Let me look."}, {"role": "tool", "content": "order 12: depot 4"},
                           {"role": "assistant", "content": "It is at depot 4."}]}
    assert encode_record(record, tok).template_drops == {"system": False, "user": False, "assistant": False, "tool": True}
    # folding system prompts does not hide another role's drop
    assert encode_record(record, tok, system_into_user=True).template_drops["tool"] is True


def test_a_template_that_keeps_only_the_last_system_message():
    tok = _tokenizer(LAST_SYSTEM)
    record = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "system", "content": "Answer in French."},
                           {"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Bonjour."}]}
    assert encode_record(record, tok).template_drops["system"] is True
    one = {"messages": record["messages"][1:]}
    assert encode_record(one, tok).template_drops == {"system": False, "user": False, "assistant": False}
    folded = encode_record(record, tok, system_into_user=True)
    assert folded.template_drops == {"user": False, "assistant": False}
    assert "<|user|>\nBe brief.\n\nAnswer in French.\n\nHello<|end|>" in tok.decode(folded.input_ids)


def test_folding_keeps_the_trained_turns_of_conversational_prompt_completion():
    tok = _tokenizer(NO_SYSTEM)
    record = {"prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hi"}],
              "completion": [{"role": "assistant", "content": "Hello, this is Ana."}]}
    folded = encode_record(record, tok, system_into_user=True)
    assert _supervised_text(tok, folded) == "Hello, this is Ana.<|end|>" and folded.template_drops == {"user": False,
                                                                                                       "assistant": False}
    messages, where = fold_system_into_user([{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
                                             {"role": "assistant", "content": "A"}, {"role": "system", "content": "late"}])
    # a system message with no user turn after it stays where it is
    assert messages == [{"role": "user", "content": "S\n\nU"}, {"role": "assistant", "content": "A"},
                        {"role": "system", "content": "late"}] and where == [None, 0, 1, 2]


def test_templates_that_render_everything_report_no_drop():
    for style in ("chatml", "phi3", "generation"):
        tok = chat_tokenizer(style)
        assert not any(encode_record(_sharegpt(1), tok).template_drops.values()), style


def test_the_warning_names_template_role_counts_and_fix():
    tally = tally_drops([{"system": True, "user": False}, {"system": False}, {"tool": True}])
    assert tally == {"system": {"records": 1, "of": 2}, "tool": {"records": 1, "of": 1}, "user": {"records": 0, "of": 1}}
    assert drop_warnings({"system": {"records": 120, "of": 120}}, "of ./phi3") == [
        "the chat template of ./phi3 drops 'system' messages: 120 of 120 records' system prompts are not in the training "
        "input; use --chat-template FILE or --system-into-user"]
    assert drop_warnings({"tool": {"records": 3, "of": 5}}, "of M") == [
        "the chat template of M drops 'tool' messages: 3 of 5 records' tool messages are not in the training input; use "
        "--chat-template FILE"]


@pytest.fixture(scope="module")
def phi3_model(tmp_path_factory):
    """A micro Llama folder whose tokenizer carries the system-less template."""
    from transformers import AutoTokenizer

    path = chat_model_folder(tmp_path_factory.mktemp("phi3") / "model", "phi3")
    tok = AutoTokenizer.from_pretrained(path)
    tok.chat_template = NO_SYSTEM
    tok.save_pretrained(path)
    return path


def _training_rows(record):
    from datasets import Dataset

    folder = record["prepared_data"]
    prepared = json.loads(open(f"{folder}/prepared.json").read())
    return [row for f in prepared["files"] for row in Dataset.from_file(f"{folder}/{f}")["input_ids"]]


@pytest.mark.slow
def test_train_and_audit_say_the_system_prompt_is_dropped_and_system_into_user_trains_it(tmp_path, phi3_model, caplog):
    from transformers import AutoTokenizer

    data = tmp_path / "chats.jsonl"
    data.write_text("".join(json.dumps(_sharegpt(i)) + "\n" for i in range(12)))
    tok = AutoTokenizer.from_pretrained(phi3_model)
    warning = (f"the chat template of {phi3_model} drops 'system' messages: 12 of 12 records' system prompts are not in the "
               "training input; use --chat-template FILE or --system-into-user")
    runs = {}
    for name, extra in (("plain", []), ("folded", ["--system-into-user"])):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="goldfish"):
            assert main(["train", "--model", phi3_model, "--data", str(data), "--out", str(tmp_path / name), "--max-steps", "1",
                         "--batch-size", "4", "--no-progress", "--seq-len", "128", "--save-steps", "0", "--report-to", "none",
                         "--data-cache", str(tmp_path / "cache"), *extra]) == 0
        runs[name] = json.loads((tmp_path / name / "goldfish.json").read_text())
        runs[name]["log"] = caplog.text
    assert runs["plain"]["log"].count(warning) == 1
    assert runs["plain"]["template_drops"] == {"system": {"records": 12, "of": 12}}
    assert all(SYSTEM not in tok.decode(ids) for ids in _training_rows(runs["plain"]))
    assert "drops 'system'" not in runs["folded"]["log"] and runs["folded"]["template_drops"] == {}
    assert runs["folded"]["settings"]["system_into_user"] is True
    assert runs["folded"]["prepared_data"] != runs["plain"]["prepared_data"]  # the cache key follows the flag
    rows = _training_rows(runs["folded"])
    assert len(rows) == 12 and all(f"<|user|>\n{SYSTEM}\n\nWhere is order" in tok.decode(ids) for ids in rows)
    # the audit's prompts: the same check, the same fix
    for name, extra in (("plain", []), ("folded", ["--system-into-user"])):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="goldfish"):
            assert main(["audit", "--model", str(tmp_path / name), "--data", str(data), "--max-documents", "2", "--no-progress",
                         "--out", str(tmp_path / f"audit-{name}"), *extra]) == 0
        summary = json.loads((tmp_path / f"audit-{name}" / "summary.json").read_text())
        drops = summary["models"][name]["template_drops"]
        if name == "plain":
            assert drops == {"system": {"records": 2, "of": 2}}
            assert caplog.text.count(f"the chat template of {tmp_path / name} drops 'system' messages: 2 of 2 records' system "
                                     "prompts are not in the audit's prompts") == 1
        else:
            assert drops == {} and "drops 'system'" not in caplog.text
