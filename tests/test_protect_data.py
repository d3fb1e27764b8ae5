"""Protected spans through the data path: markers on text, prompt/completion and chat templates
(ChatML), the prepared Arrow dataset equal to the in-memory builder, per-record ``protect``, the
collator and ``goldfish_labels_map``, ``goldfish train --protect`` and ``goldfish mask --protect``."""

import json

import numpy as np
import torch
from chat_styles import chat_tokenizer

from goldfish import GoldfishConfig
from goldfish.cli import main
from goldfish.data import build_examples, pack_examples, read_documents
from goldfish.data.prepare import DataSettings, prepare_dataset
from goldfish.data.tokenize import encode_document
from goldfish.integrations.hf import GoldfishCollator, goldfish_labels_map
from goldfish.mask import goldfish_mask
from goldfish.secrets import Secret, builtin_secrets

SECRET = "Marisol Quintero"
EMAIL = "m.quintero@meridian-help.example"
SECRETS = [Secret(SECRET, literal=SECRET), *builtin_secrets()]


def _protected_text(tokenizer, ids, marker):
    return [tokenizer.decode([t for t, m in zip(ids, marker) if m == n]).strip() for n in sorted(set(marker) - {0})]


def test_markers_cover_exactly_the_secrets_in_every_format(tokenizer):
    text = f"Write to {SECRET} at {EMAIL} or call +1 (415) 555-0142."
    ids, labels, marker = encode_document({"text": text}, tokenizer, secrets=SECRETS)
    assert _protected_text(tokenizer, ids, marker) == [SECRET, EMAIL, "+1 (415) 555-0142"]
    assert marker[-1] == 0 and ids[-1] == tokenizer.eos_token_id
    ids, labels, marker = encode_document({"prompt": f"Who is {SECRET}?", "completion": f" {SECRET} is our agent."}, tokenizer,
                                          secrets=SECRETS)
    assert _protected_text(tokenizer, ids, marker) == [SECRET, SECRET]
    assert len(set(marker) - {0}) == 2  # prompt and completion spans are numbered apart
    assert encode_document({"text": text}, tokenizer)[2] is None


def test_markers_on_a_chatml_template_without_generation_tags():
    tok = chat_tokenizer("chatml")
    doc = {"messages": [{"role": "user", "content": f"Is {SECRET} in today?"},
                        {"role": "assistant", "content": f"Yes. Regards, {SECRET} ({EMAIL})"}]}
    ids, labels, marker = encode_document(doc, tok, secrets=SECRETS)
    assert _protected_text(tok, ids, marker) == [SECRET, SECRET, EMAIL]
    supervised_protected = [m for m, lab in zip(marker, labels) if m and lab != -100]
    assert len(set(supervised_protected)) == 2  # the reply's name and email are supervised and protected


def test_per_record_protect_field(tokenizer):
    docs = [{"text": "Agent Kestrel Moss signs off.", "protect": "Kestrel Moss"}, {"text": "Nothing to hide here."}]
    examples = build_examples(docs, tokenizer, 64, 4)
    assert _protected_text(tokenizer, examples[0]["input_ids"], examples[0]["goldfish_protected"]) == ["Kestrel Moss"]
    assert not any(examples[1]["goldfish_protected"])


def test_prepared_protection_equals_in_memory_and_counts(tmp_path, tokenizer):
    from goldfish.experiments.chat_data import build_chats

    rows = build_chats(60, 0.2, 0.08, seed=0)["train"] + [{"messages": [{"role": "user", "content": "hi"},
                                                                  {"role": "assistant", "content": "Ask Kestrel Moss."}],
                                                     "protect": ["Kestrel Moss"]}]
    path = tmp_path / "chats.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = GoldfishConfig(protect_k=2)
    for pack in (False, True):
        got = prepare_dataset([str(path)], tokenizer, DataSettings(seq_len=256, pack=pack), cfg, SECRETS,
                              cache=tmp_path / "c", progress=False)
        want = build_examples(read_documents(str(path)), tokenizer, 256, 4, secrets=SECRETS)
        if pack:
            want = pack_examples(want, 256, tokenizer.pad_token_id)
        assert [dict(r) for r in got.train] == want
    marker = np.concatenate([e["goldfish_protected"] for e in build_examples(read_documents(str(path)), tokenizer, 256, 4, secrets=SECRETS)])
    counts = got.counts
    assert counts["protected_targets"] > 100 and counts["protected_targets"] <= int((marker != 0).sum())
    assert 0.5 <= counts["protected_dropped"] / counts["protected_targets"] < 0.75  # 1/2 plus at least one a span


def test_collator_and_labels_map_apply_the_marker(tokenizer):
    from transformers import DataCollatorForSeq2Seq

    docs = [{"text": f"Please contact {SECRET} about order {i}, or {EMAIL}."} for i in range(3)]
    examples = build_examples(docs, tokenizer, 64, 4, secrets=SECRETS)
    cfg = GoldfishConfig(protect_k=1)  # every protected target dropped
    batch = GoldfishCollator(DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100), cfg)(examples)
    mapped = goldfish_labels_map(cfg)({k: [e[k] for e in examples] for k in ("input_ids", "labels", "goldfish_protected")})
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        ids, marker = np.asarray(e["input_ids"]), np.asarray(e["goldfish_protected"])
        want = np.where(goldfish_mask(ids, cfg, protected=marker), -100, ids)
        assert batch["labels"][i, :n].tolist() == want.tolist() == mapped["labels"][i]
        assert (batch["labels"][i, :n][torch.tensor(marker) != 0] == -100).all()


def test_train_with_protect_records_it(tmp_path, capsys, caplog):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": f"Ticket {i}: handled by {SECRET}, {EMAIL}."}) + "\n" for i in range(16)))
    names = tmp_path / "names.txt"
    names.write_text(SECRET + "\nNadai Okafro\n")  # the second, a typo, occurs nowhere
    out = tmp_path / "o"
    assert main(["train", "--init", "micro", "--data", str(data), "--out", str(out), "--max-steps", "2", "--batch-size", "4",
                 "--no-progress", "--save-steps", "0", "--protect", "builtin", "--protect", str(names), "--protect-k", "3"]) == 0
    rec = json.loads((out / "goldfish.json").read_text())
    p = rec["protection"]
    from goldfish.secrets import BUILTIN_DETECTORS

    detectors = list(BUILTIN_DETECTORS)
    assert p["occurrences_per_secret"] == [16 if d == "email" else 0 for d in detectors] + [16, 0]
    log = caplog.text
    assert f"protect: occurrences in the training records: 'email' 16, 'phone' 0" in log and f"{SECRET!r} 16, 'Nadai Okafro' 0" in log
    assert [r.getMessage() for r in caplog.records if "protects nothing" in r.getMessage()] == [
        "protect: secret 'Nadai Okafro' protects nothing: it occurs in none of the training records (a typo, or another "
        "spelling than the data's?)"]  # the detectors that find nothing are not warned about
    assert SECRET not in (out / "goldfish.json").read_text()
    assert p["rule"] == "goldfish-protect-v1" and p["protect_k"] == 3 and p["protect"] == ["builtin", str(names)]
    assert p["protected_targets"] >= 16 * 10 and 0 < p["protected_dropped"] < p["protected_targets"]
    assert rec["goldfish"]["protect_k"] == 3
    assert "protected targets" in capsys.readouterr().out


def test_train_with_a_missing_protect_file_fails_before_writing(tmp_path, capsys):
    assert main(["train", "--init", "micro", "--data", "embedded:targets", "--out", str(tmp_path / "o"),
                 "--protect", str(tmp_path / "nope.txt"), "--no-progress"]) == 2
    assert "nope.txt: no such file" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_mask_cli_marks_protected_spans(capsys):
    assert main(["mask", f"Write to {EMAIL} today, then to {EMAIL} again.", "--protect", "builtin", "--plain"]) == 0
    out = capsys.readouterr().out
    first, second = out.split("{{")[1].split("}}")[0], out.split("{{")[2].split("}}")[0]
    assert first == second and "[[" in first  # the same email, the same drops, in both places
    assert "protected" in out and "2 spans" in out


def test_the_secrets_are_in_no_file_of_the_cache_or_the_run(tmp_path):
    from goldfish.cache import fingerprint

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": f"Ticket {i}: handled by {SECRET}."}) + "\n" for i in range(16)))
    names = tmp_path / "names.txt"
    names.write_text(SECRET + "\n")
    out, cache = tmp_path / "o", tmp_path / "cache"
    assert main(["train", "--init", "micro", "--data", str(data), "--out", str(out), "--max-steps", "2", "--batch-size", "4",
                 "--no-progress", "--save-steps", "1", "--protect", str(names), "--data-cache", str(cache)]) == 0
    [record] = [json.loads(p.read_text()) for p in cache.rglob("prepared.json")]
    assert record["settings"]["protect"] == fingerprint([SECRET]) and record["protected_targets"] > 0
    holding = [p for root in (cache, out) for p in root.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert holding == []
