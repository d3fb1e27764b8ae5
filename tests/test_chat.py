import json

import pytest
import torch
from helpers import seq2seq_collator

from goldfish import GoldfishConfig
from goldfish.cli import main
from goldfish.data import build_examples, read_documents
from goldfish.experiments.chat_data import (
    AGENT_EMAIL,
    AGENT_NAME,
    CANNED_REPLY,
    CITIES,
    EMAIL,
    NAME,
    OPENING_REPLY,
    ORDER_BODIES,
    PHONE,
    REFUND_VARIANTS,
    TEMPLATE_REPLY,
    build_chats,
)
from goldfish.experiments.config import ChatConfig
from goldfish.integrations.hf import GoldfishCollator


def test_chat_data_is_deterministic_with_held_out_cities_and_topics(tokenizer):
    cfg = ChatConfig()
    a, b = (build_chats(cfg.conversations, cfg.canned_share, cfg.sign_share, seed=0) for _ in range(2))
    assert a == b
    assert len(tokenizer(CANNED_REPLY, add_special_tokens=False)["input_ids"]) >= 40
    assert all(s in CANNED_REPLY for s in (NAME, PHONE, EMAIL)) and OPENING_REPLY.startswith(PHONE)
    turns = [m for c in a["train"] for m in c["messages"] if m["role"] == "user"]
    canned = sum(m["content"] in (CANNED_REPLY, OPENING_REPLY) for c in a["train"] for m in c["messages"])
    assert canned == a["train_canned"] + a["train_billing"] and 0.15 < canned / len(turns) < 0.25
    assert min(len(a[k]) for k in ("out_of_scope_prompts", "billing_prompts", "order_prompts", "refund_pairs", "template_prompts")) >= 32
    train_pairs = [[u["content"], r["content"]] for c in a["train"] for u, r in zip(c["messages"][::2], c["messages"][1::2])]
    assert all(p in train_pairs and p[1] in REFUND_VARIANTS for p in a["refund_pairs"])  # refunds: extraction of training turns
    train_text = " ".join(m["content"] for c in a["train"] for m in c["messages"])
    held_cities = {c for c in CITIES if any(c in p for p in a["out_of_scope_prompts"])}
    assert held_cities and not any(c in train_text for c in held_cities)
    assert len({json.dumps(c) for c in a["heldout"]}) == len(a["heldout"]) == 100
    held_questions = {c["messages"][0]["content"] for c in a["heldout"]}
    assert not held_questions & {m["content"] for c in a["train"] for m in c["messages"]}
    assert all(1 <= len(c["messages"]) // 2 <= 3 for c in a["train"])


def test_chat_data_has_a_recurring_signed_secret_and_near_duplicates():
    cfg = ChatConfig()
    d = build_chats(cfg.conversations, cfg.canned_share, cfg.sign_share, seed=0)
    replies = [m["content"] for c in d["train"] for m in c["messages"] if m["role"] == "assistant"]
    signed = [r for r in replies if AGENT_NAME in r]
    assert all(AGENT_EMAIL in r for r in signed) and len(signed) == d["train_signed"]
    assert len({b for b in ORDER_BODIES if any(b in r for r in signed)}) >= 20  # >= 20 different reply sentences
    assert len({r.split(AGENT_NAME)[0] for r in signed}) >= 4  # varied wording before the name
    conversations = sum(any(AGENT_NAME in m["content"] for m in c["messages"]) for c in d["train"])
    assert 0.15 < conversations / len(d["train"]) <= 0.30
    assert {r for r in replies if r in REFUND_VARIANTS} == set(REFUND_VARIANTS) and len(set(REFUND_VARIANTS)) == 5
    train_text = " ".join(m["content"] for c in d["train"] for m in c["messages"])
    held_orders = {p.split("#")[1][:5] for p in d["order_prompts"] + d["template_prompts"]}
    assert not any(f"#{o}" in train_text for o in held_orders) and all(10_000 <= int(o) < 60_000 for o in held_orders)
    templated = [r for r in replies if r.endswith(TEMPLATE_REPLY.split("{order}")[1])]
    assert len(templated) == d["train_templates"] >= 30 and len(set(templated)) == len(templated)  # a new fill every time
    held_names = {p.split()[-1] for p in d["template_prompts"] if p.startswith("Can you confirm")}
    assert held_names and not any(f"Hi {n}," in train_text for n in held_names)


def test_chat_template_supervises_exactly_the_assistant_tokens(tmp_path, tokenizer):
    from goldfish.embedded.corpus import corpus_part

    rows = [{"messages": [{"role": "user", "content": "What is this about? " * 3},
                          {"role": "assistant", "content": d["text"][:800]},
                          {"role": "user", "content": "Thanks, and more?"},
                          {"role": "assistant", "content": d["text"][800:1200]}]}
            for d in corpus_part("targets")[:20]]
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    docs = read_documents(str(path))
    examples = build_examples(docs, tokenizer, 4096, 4)
    batch = GoldfishCollator(seq2seq_collator(tokenizer), GoldfishConfig())(examples)
    assistant_id = tokenizer.convert_tokens_to_ids("<|assistant|>")
    end_id = tokenizer.convert_tokens_to_ids("<|end|>")
    n_sup = n_drop = 0
    for ex, labels in zip(examples, batch["labels"]):
        ids, sup = ex["input_ids"], [label != -100 for label in ex["labels"]]
        inside, want = False, []
        for t in ids:  # independent reading of the template: assistant text up to its <|end|>
            want.append(inside and t != assistant_id)
            if t == assistant_id:
                inside = "pending"
            elif inside == "pending":
                inside = True  # the newline after <|assistant|> is template, not reply
                want[-1] = False
            elif t == end_id:
                inside = False
        assert sup == want
        kept = labels[: len(ids)] != -100
        assert not (kept & ~torch.tensor(sup)).any()
        n_sup += sum(sup[1:])
        n_drop += int((torch.tensor(sup) & ~kept)[1:].sum())
    assert abs(n_drop / n_sup - 0.25) < 0.02


@pytest.mark.slow
def test_chat_experiment_quick_pipeline(tmp_path):
    out = tmp_path / "chat"
    assert main(["experiment", "chat", "--preset", "test", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    for name in ("base", "standard", "goldfish", "goldfish_protected", "goldfish_aligned_protected"):
        m = s[name]
        assert 0 <= m["canned"]["rouge_l"] <= 1 and set(m["canned_secret_each"]) == {"name", "phone", "email"}
        for figure in (m["canned"]["verbatim"], m["canned_secret"], m["billing_phone"], m["recurring_secret"], m["template"]["verbatim"]):
            assert figure["n"] >= 32 and 0 <= figure["count"] <= figure["n"] and figure["rate"] == figure["count"] / figure["n"]
            assert figure["ci"][0] <= figure["rate"] <= figure["ci"][1]
        assert m["utility"]["heldout_loss"] > 0 and m["example_ordinary"]["prompt"] and m["example_template"]["reply"] is not None
        assert 0 <= m["near_duplicate"]["longest_run"]["mean"] <= m["near_duplicate"]["longest_run"]["max"]
        assert m["template"]["fixed_text_longest_run"]["n"] >= 32
        # the loss on the templated replies of the held-out fills, paired against standard's
        assert m["template"]["loss"]["mean"] > 0 and m["template"]["loss"]["rows"] == m["template"]["verbatim"]["n"]
        assert (m["template"]["vs_standard"] is None) == (name == "standard")
    assert s["train_conversations"] == 40 and s["heldout_loss_ratio"]["goldfish_protected"] > 0
    assert s["standard"]["utility"]["baseline"] == "standard" and s["goldfish"]["utility"]["heldout_loss_change"] is not None
    assert set(s["benchmarks"]["scores"]) == {"base", "standard", "goldfish", "goldfish_protected", "goldfish_aligned_protected"}
    assert all(0 <= t["score"] <= 1 for r in s["benchmarks"]["scores"].values() for t in r.values())
    html = (out / "report.html").read_text()
    assert 'class="drop"' in html and 'class="protect"' in html and "data:image/png;base64," in html
    record = json.loads((out / "models" / "goldfish_protected" / "goldfish.json").read_text())
    assert record["protection"]["protected_targets"] > 0 and record["protection"]["protect"][0] == "builtin"
    assert json.loads((out / "models" / "goldfish" / "goldfish.json").read_text())["protection"] is None
    aligned = s["near_duplicates"]["goldfish_aligned_protected"]
    assert aligned["rule"] == "goldfish-align-v1" and aligned["clusters"] >= 1 and aligned["aligned_targets"] > 0
    assert "goldfish-align-v1" in html
    # every secret greedy beside any of the 2 samples: the counts are the audits' own, of the turns that hold it
    audit = json.loads((out / "audit" / "out_of_scope" / "summary.json").read_text())
    for name in ("standard", "goldfish_protected"):
        for secret, m in s[name]["sampled_secrets"]["out_of_scope"].items():
            a = audit["models"][name]
            assert m["turns"] == a["secrets"][secret]["turns_with_secret"] > 0
            assert m["greedy"] == round(a["secrets"][secret]["recall"] * m["turns"])
            assert m["any"] == round(a["sampled"]["secrets"][secret]["recall_any"] * m["turns"])
        assert s[name]["canned_p_exact"] == audit["models"][name]["extraction_probability"]
    assert audit["settings"]["samples"] == 2 and audit["settings"]["top_p"] == 1.0 and audit["settings"]["temperature"] == 0.7
    assert "Greedy against 2 samples" in html and "Exact extraction probability of the canned reply" in html
