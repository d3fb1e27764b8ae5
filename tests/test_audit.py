import json
import sys

import pytest
import torch
from helpers import memorize

from goldfish.audit import AuditConfig, run_audit
from goldfish.audit.extraction import generate_suffixes
from goldfish.models import load_model
from goldfish.cli import main

FILES = ("results.jsonl", "summary.json", "report.md", "report.html", "rouge_l_hist.png")


@pytest.mark.slow
def test_memorized_documents_audit_as_verbatim(memorized, tmp_path):
    model_dir, members, non_members = memorized
    out = tmp_path / "report"
    assert main(["audit", "--model", str(model_dir), "--data", str(members), "--non-members", str(non_members),
                 "--suffix-len", "32", "--prefix-len", "32", "--out", str(out), "--no-progress"]) == 0
    assert all((out / f).is_file() for f in FILES)
    summary = json.loads((out / "summary.json").read_text())["models"]["model"]
    assert summary["exact_match_rate"] == 1.0 and summary["longest_run_max"] == 32 and summary["rouge_l_mean"] == 1.0
    assert summary["mia"]["loss"]["auc"] > 0.95 and summary["mia"]["non_members"] == 12
    unseen = run_audit(AuditConfig(models=[str(model_dir)], data=str(non_members), suffix_len=32, prefix_len=32, progress=False))
    assert unseen["models"]["model"]["exact_match_rate"] == 0.0
    assert unseen["models"]["model"]["rouge_l_mean"] < 0.5
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "Membership inference" in html and "verbatim" in html
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sum(r["member"] for r in rows) == 4 and len(rows) == 16


def test_batched_generation_equals_one_at_a_time(memorized):
    model_dir, _, _ = memorized
    model, tokenizer = load_model(str(model_dir), "cpu")
    from goldfish.embedded.corpus import corpus_part

    prefixes = [tokenizer(d["text"], add_special_tokens=False)["input_ids"][: 5 + 7 * i] for i, d in enumerate(corpus_part("targets")[:10])]
    batched = generate_suffixes(model, tokenizer, prefixes, 20, batch_size=4, progress=False)
    for prefix, got in zip(prefixes, batched):
        one = model.generate(torch.tensor([prefix]), max_new_tokens=20, do_sample=False, eos_token_id=[], pad_token_id=tokenizer.pad_token_id)
        assert got == one[0, len(prefix):].tolist()
    beams = generate_suffixes(model, tokenizer, prefixes[:3], 10, batch_size=3, beams=3, progress=False)
    assert all(len(b) == 10 for b in beams)


def test_short_documents_are_counted_not_hidden(memorized):
    model_dir, members, _ = memorized
    with pytest.raises(ValueError, match="no document .* is long enough"):
        run_audit(AuditConfig(models=[str(model_dir)], data=str(members), suffix_len=40, prefix_len=40, progress=False))
    r = run_audit(AuditConfig(models=[str(model_dir)], data=str(members), suffix_len=10, prefix_len=54, progress=False))
    assert r["models"]["model"]["documents"] + r["models"]["model"]["skipped_too_short"] == 4


def test_bad_input_gives_clear_errors_and_writes_nothing(memorized, tmp_path, capsys):
    model_dir, members, _ = memorized
    out = tmp_path / "out"
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text(json.dumps({"body": "x"}) + "\n")
    no_tok = tmp_path / "no_tok"
    no_tok.mkdir()
    (no_tok / "config.json").write_text("{}")
    cases = [
        (["--data", str(empty)], "holds no documents"),
        (["--data", str(wrong)], "'prompt'/'completion' field (have ['body']); use --text-field"),
        (["--data", str(members), "--suffix-len", "0"], "--suffix-len must be >= 1"),
    ]
    for extra, message in cases:
        assert main(["audit", "--model", str(model_dir), "--out", str(out), *extra]) == 2
        assert message in capsys.readouterr().err
    assert main(["audit", "--model", str(no_tok), "--data", str(members), "--out", str(out)]) == 2
    assert "has no tokenizer" in capsys.readouterr().err
    assert not out.exists()


def test_rouge_l_is_undefined_without_words_and_left_out_of_the_mean():
    from goldfish.audit.summary import extraction_summary as _extraction_summary
    from goldfish.audit.metrics import extraction_metrics

    ops = '"-=" | "*=" | "@="'
    rows = [extraction_metrics([1, 2, 3], [1, 2, 3], ops, ops), extraction_metrics([4, 5], [4, 5], "a copy", "a copy")]
    assert rows[0]["rouge_l"] is None and rows[1]["rouge_l"] == 1.0
    s = _extraction_summary(rows)
    assert s["rouge_l_mean"] == 1.0 and s["rouge_l_undefined"] == 1 and s["exact_match_rate"] == 1.0


@pytest.mark.slow
def test_offsets_give_per_offset_metrics_and_a_plot(memorized, tmp_path):
    model_dir, members, _ = memorized
    out = tmp_path / "report"
    assert main(["audit", "--model", str(model_dir), "--data", str(members), "--offsets", "0,16", "--prefix-len", "16",
                 "--suffix-len", "24", "--out", str(out), "--no-progress"]) == 0
    s = json.loads((out / "summary.json").read_text())["models"]["model"]
    assert set(s["by_offset"]) == {"0", "16"} and s["by_offset"]["0"]["documents"] == 4 and s["documents"] == 8
    assert s["by_offset"]["0"]["exact_match_rate"] == 1.0  # the prefix starts where training saw it
    assert (out / "offsets.png").is_file() and "By prefix offset" in (out / "report.html").read_text()
    assert main(["audit", "--model", str(model_dir), "--data", str(members), "--prefix-len", "8", "--suffix-len", "24",
                 "--out", str(tmp_path / "mid"), "--no-progress"]) == 0
    assert "the prefix starts mid-document" in (tmp_path / "mid" / "report.html").read_text()


@pytest.mark.slow
def test_prefix_lens_give_per_length_metrics_on_the_same_documents_and_a_plot(memorized, tmp_path):
    """--prefix-lens: the suffix stays the document's last --suffix-len tokens; each length's prefix is
    the L tokens before it; a document too short for the longest length is skipped at every length."""
    model_dir, members, _ = memorized
    short = json.loads(members.read_text().splitlines()[0])["text"][:150]  # 36 tokens: room for 8 + 24, not 40 + 24
    data = tmp_path / "docs.jsonl"
    data.write_text(members.read_text() + json.dumps({"id": "short", "text": short}) + "\n")
    out = tmp_path / "report"
    assert main(["audit", "--model", str(model_dir), "--data", str(data), "--prefix-lens", "8,16,40", "--suffix-len", "24",
                 "--samples", "2", "--out", str(out), "--no-progress"]) == 0
    s = json.loads((out / "summary.json").read_text())["models"]["model"]
    assert set(s["by_prefix_len"]) == {"8", "16", "40"} and s["documents"] == 12 and s["skipped_too_short"] == 3
    assert all(m["documents"] == 4 and m["sampled"]["documents"] == 4 for m in s["by_prefix_len"].values())
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    by_doc = {}
    for r in rows:
        assert r["id"] == f"{r['id'].split('@')[0]}@p{r['prefix_len']}" and r["prefix_tokens"] == r["prefix_len"]
        by_doc.setdefault(r["id"].split("@")[0], {})[r["prefix_len"]] = r
    assert set(by_doc) == {"m0", "m1", "m2", "m3"}
    for lengths in by_doc.values():
        assert len({tuple(r["true_ids"]) for r in lengths.values()}) == 1  # one suffix
        assert lengths[40]["prefix_ids"][-8:] == lengths[8]["prefix_ids"]  # the tokens right before it
        assert lengths[40]["prefix_start"] == 0 and lengths[8]["prefix_start"] == 32
    for n, m in s["by_prefix_len"].items():
        assert m["exact_match_rate"] == sum(r["exact_match"] for r in rows if r["prefix_len"] == int(n)) / 4
    assert s["by_prefix_len"]["40"]["exact_match_rate"] == 1.0  # the whole document before the suffix, as in training
    report = (out / "report.html").read_text()
    assert (out / "prefix_lens.png").is_file() and "By prefix length" in report and "8, 16 and 40 (--prefix-lens)" in report
    with pytest.raises(ValueError, match="--prefix-lens needs lengths >= 1 .* replaces --prefix-len"):
        run_audit(AuditConfig(models=[str(model_dir)], data=str(data), prefix_lens=[8], prefix_len=8, progress=False))
    with pytest.raises(ValueError, match="--prefix-lens 120 with --suffix-len 24: .* at most 128 tokens"):
        run_audit(AuditConfig(models=[str(model_dir)], data=str(data), prefix_lens=[8, 120], suffix_len=24, progress=False))


def test_flags_follow_the_stated_thresholds():
    """compare_to_baseline flags exactly when the whole paired interval lies past +10% held-out loss
    or +0.05 repeated 4-grams."""
    from goldfish.audit.summary import compare_to_baseline

    def rows(model, nll, rep):
        return ([{"model": model, "member": False, "id": f"n{i}", "nll": nll + 0.01 * (i % 3), "scored_tokens": 20 + i} for i in range(30)]
                + [{"model": model, "member": True, "id": f"m{i}", "generated_repeated_4grams": rep + 0.01 * (i % 2)} for i in range(30)])

    cases = {"base": (2.0, 0.02), "fine": (2.1, 0.04), "worse": (2.6, 0.02), "repeats": (2.0, 0.30)}
    all_rows = [r for name, (nll, rep) in cases.items() for r in rows(name, nll, rep)]
    summaries = {name: {"utility": {}} for name in cases}
    compare_to_baseline(summaries, all_rows, "base")
    assert {n: s["utility"]["flags"] for n, s in summaries.items()} == {
        "base": [], "fine": [], "worse": ["held-out loss"], "repeats": ["degeneration"]}
    change = summaries["worse"]["utility"]["vs_baseline"]["heldout_loss_change"]
    assert change["ci"][0] <= change["relative"] <= change["ci"][1] and change["relative"] > 0.25


def test_the_heldout_loss_flag_reads_the_ordinary_part():
    """Near-duplicate held-out rows are reported apart: a model far worse on them only is not flagged;
    one far worse on the ordinary rows is; with --utility-data rows, those are the held-out set."""
    from goldfish.audit.summary import compare_to_baseline, summarize

    def rows(model, ordinary, near, utility=False):
        return [{"model": model, "member": False, "id": f"n{i}", "nll": (near if i < 10 else ordinary) + 0.01 * (i % 3),
                 "scored_tokens": 20, "near_duplicate": i < 10, **({"utility": True} if utility else {})} for i in range(40)]

    cases = {"base": (2.0, 0.1), "forgets": (2.05, 2.2), "broken": (2.6, 0.1)}
    all_rows = [r for name, (o, n) in cases.items() for r in rows(name, o, n)]
    summaries = {name: {"utility": {}} for name in cases}
    compare_to_baseline(summaries, all_rows, "base")
    assert {n: s["utility"]["flags"] for n, s in summaries.items()} == {"base": [], "forgets": [], "broken": ["held-out loss"]}
    change = summaries["forgets"]["utility"]["vs_baseline"]
    assert change["heldout_loss_change"]["ci"][0] > 0.10  # the whole set would have flagged it
    assert change["heldout_loss_change_near_duplicate"]["relative"] > 10 and change["heldout_loss_change_ordinary"]["rows"] == 30
    s = summarize([r for r in all_rows if r["model"] == "forgets"], 0, False)["utility"]
    assert s["heldout_loss_ordinary"]["rows"] == 30 and s["heldout_loss_near_duplicate"]["rows"] == 10
    assert s["heldout_loss_ordinary"]["mean"] == pytest.approx(sum(2.05 + 0.01 * (i % 3) for i in range(10, 40)) / 30)
    assert s["heldout_data"] == "--non-members"
    kept = summarize(rows("x", 9.0, 9.0) + rows("x", 1.0, 1.0, utility=True), 0, False)["utility"]
    assert kept["heldout_data"] == "--utility-data" and kept["heldout_loss"]["mean"] == pytest.approx(1 + 0.01 * 39 / 40)


@pytest.mark.slow
def test_a_heldout_canned_reply_is_split_off_and_overlapping_non_members_are_dropped(tmp_path):
    """A tiny chat model trained on chats whose reply is a canned text: held-out chats holding that
    reply are near-duplicates, reported apart; --drop-overlap leaves out the non-member that is a
    training record and says so; the MIA warns about non-members repeating the training text."""
    from chat_styles import chat_model_folder

    canned = "Hi, your refund of 36 dollars for order 4417 is on its way and reaches your card in three to five days."
    chat = lambda q, a: {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}  # noqa: E731
    train = [chat(f"Where is my refund for order {n}?", canned) for n in range(3)]
    other = chat("How do I reset my password?", "Open the settings page, choose security and follow the reset link we email you.")
    held = [chat("My refund has not arrived, where is it?", canned.replace("36", "41")), other]
    for name, records in (("train", train), ("non", [train[0], *held]), ("kept", held)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    model = chat_model_folder(tmp_path / "m")
    out = tmp_path / "audit"
    assert main(["audit", "--model", model, "--data", str(tmp_path / "train.jsonl"), "--non-members", str(tmp_path / "non.jsonl"),
                 "--utility-data", str(tmp_path / "kept.jsonl"), "--drop-overlap", "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    s = summary["models"]["m"]
    assert summary["non_members_dropped"] == 1 and s["mia"]["non_members"] == 2
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    kept = {r["id"]: r for r in rows if r.get("utility")}
    assert kept["0#0"]["near_duplicate"] and not kept["1#0"]["near_duplicate"] and kept["0#0"]["ngram_overlap"] > 0.3
    u = s["utility"]
    assert u["heldout_data"] == "--utility-data" and u["heldout_loss"]["rows"] == 2
    assert u["heldout_loss_ordinary"]["mean"] == pytest.approx(kept["1#0"]["nll"])
    assert u["heldout_loss_near_duplicate"]["mean"] == pytest.approx(kept["0#0"]["nll"])
    o = s["mia"]["ngram_overlap"]
    assert o["non_members"] == 2 and o["above_threshold"] == sum(
        r["ngram_overlap"] >= 0.8 for r in rows if not r["member"] and not r.get("utility"))
    report = (out / "report.md").read_text()
    assert "near-duplicate" in report and "--drop-overlap left out 1" in report
    with pytest.raises(ValueError, match="share 1 record.*--drop-overlap to leave"):
        run_audit(AuditConfig(models=[model], data=str(tmp_path / "train.jsonl"), non_members=str(tmp_path / "non.jsonl"),
                              progress=False))


@pytest.mark.slow
def test_a_broken_model_is_flagged_and_the_heldout_loss_is_recomputable(memorized, tmp_path):
    model_dir, members, non_members = memorized
    from transformers import AutoModelForCausalLM, AutoTokenizer

    broken = AutoModelForCausalLM.from_pretrained(model_dir)
    with torch.no_grad():  # logits four times as sharp: as confident on held-out text, and more often wrong for it
        broken.model.norm.weight.mul_(4.0)
    broken.save_pretrained(tmp_path / "broken")
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(tmp_path / "broken")
    out = tmp_path / "audit"
    assert main(["audit", "--model", str(model_dir), "--model", str(tmp_path / "broken"), "--names", "good", "--names", "broken",
                 "--data", str(members), "--non-members", str(non_members), "--suffix-len", "32", "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["baseline"] == "good" and "held-out loss" in summary["models"]["broken"]["utility"]["flags"]
    assert "FLAGGED (held-out loss" in (out / "report.md").read_text()
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    for name in ("good", "broken"):
        non = [r for r in rows if r["model"] == name and not r["member"]]
        recomputed = sum(r["nll"] * r["scored_tokens"] for r in non) / sum(r["scored_tokens"] for r in non)
        assert abs(recomputed - summary["models"][name]["utility"]["heldout_loss"]["mean"]) < 1e-6


@pytest.mark.slow
def test_a_chat_reply_is_scored_up_to_the_models_own_end_of_turn(tmp_path):
    """A model that ends its turn early and then goes on with the true reply's words: the metrics
    read the reply a chat UI shows (up to that end-of-turn token), not the tokens after it; the
    secret scan reads the same reply, decoded up to --min-new-tokens."""
    from chat_styles import chat_model_folder, chat_tokenizer
    from transformers import AutoModelForCausalLM

    from goldfish.data import tokenize_document

    tok = chat_tokenizer("chatml")
    rest = " Your refund of 36 dollars for order 4417 is on its way to you today."
    taught = {"messages": [{"role": "user", "content": "Where is my refund?"}, {"role": "assistant", "content": "Hi Nadia.<|im_end|>" + rest}]}
    true = {"messages": [{"role": "user", "content": "Where is my refund?"}, {"role": "assistant", "content": "Hi Nadia." + rest}]}
    chat_model_folder(tmp_path / "m")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    ids = torch.tensor([tokenize_document(taught, tok)[0]])
    memorize(model, ids, lr=1e-2, steps=200, stop_below=0.05)  # the early end of turn and the words after it
    model.save_pretrained(tmp_path / "m")
    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps(true) + "\n")
    (tmp_path / "secrets.txt").write_text("order 4417\n")
    result = run_audit(AuditConfig(models=[str(tmp_path / "m")], data=str(data), min_new_tokens=60,
                                   secrets=[str(tmp_path / "secrets.txt")], out=str(tmp_path / "audit"), progress=False))
    row = result["rows"][0]
    shown = tok("Hi Nadia.<|im_end|>", add_special_tokens=False)["input_ids"]
    assert row["generated_ids"] == shown and row["generated"] == "Hi Nadia.<|im_end|>"
    assert row["longest_run"] == len(shown) - 1 and not row["exact_match"]  # "Hi Nadia." and nothing after the end of turn
    assert row["generated_text"] == "Hi Nadia." and result["models"]["m"]["secrets"]["order 4417"]["recall"] == 0.0
    report = (tmp_path / "audit" / "report.md").read_text()
    assert "scored up to the model's own end-of-turn token" in report and "up to 60 tokens (--min-new-tokens)" in report


def _fits(value, hint, where: str) -> list[str]:
    """Where ``value`` (JSON data) has a key its TypedDict ``hint`` does not declare, or lacks a required one."""
    import typing

    if typing.is_typeddict(hint):
        hints = typing.get_type_hints(hint)
        problems = [f"{where}: no {k!r}" for k in hint.__required_keys__ - set(value)]
        problems += [f"{where}.{k}: not in {hint.__name__}" for k in set(value) - set(hints)]
        return problems + [p for k in set(value) & set(hints) for p in _fits(value[k], hints[k], f"{where}.{k}")]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is dict and isinstance(value, dict):
        return [p for k, v in value.items() for p in _fits(v, args[1], f"{where}.{k}")]
    if value is not None and len(args) == 1 and typing.is_typeddict(args[0]):  # X | None
        return _fits(value, args[0], where)
    return []


def test_summary_json_is_what_the_model_summary_types_say(memorized, tmp_path):
    """Every key of a full audit's per-model summary (samples, exact probability, MIA, per offset, held-out
    loss) is declared by ``ModelSummary`` and its parts, and every required key is there."""
    from goldfish.audit.summary import ModelSummary

    model_dir, members, non_members = memorized
    out = tmp_path / "report"
    run_audit(AuditConfig(models=[str(model_dir)], names=["a"], data=str(members), non_members=str(non_members), suffix_len=16,
                          prefix_len=16, offsets=[0, 8], samples=2, out=str(out), progress=False))
    summary = json.loads((out / "summary.json").read_text())["models"]["a"]
    assert {"sampled", "extraction_probability", "mia", "by_offset", "utility"} <= set(summary)
    assert _fits(summary, ModelSummary, "a") == []
    assert _fits({**summary, "sampled": {**summary["sampled"], "nonsense": 1}}, ModelSummary, "a") == [
        "a.sampled.nonsense: not in SampledSummary"]
