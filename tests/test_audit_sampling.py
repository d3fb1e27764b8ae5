"""Sampled extraction and the exact extraction probability: the decoding rule against HF generate and
a hand-written reference, p_exact against sampling, reproducibility, and the audit's figures."""

import json
import math

import mpmath
import pytest
import torch
from helpers import micro_model
from reference import ref_log_p_exact, ref_rule_logprob
from scipy.stats import binom

from goldfish.audit import AuditConfig, run_audit
from goldfish.audit.metrics import discoverable
from goldfish.audit.sampling import DecodingRule, exact_logprobs, sample_suffixes
from goldfish.audit.summary import DISCOVERABLE_N, DISCOVERABLE_P, sampled_secret_summary
from goldfish.cli import main
from goldfish.models import load_model
from goldfish.secrets import load_secrets

RULES = [(1.0, None, 1.0), (1.3, 40, 0.9), (0.7, 5, 1.0), (2.0, None, 0.5), (1.0, 3, 0.99), (0.8, None, 1e-9)]


def _split(tokenizer, members, prefix=32, suffix=32):
    ids = [tokenizer(json.loads(line)["text"], add_special_tokens=False)["input_ids"] for line in members.read_text().splitlines()]
    return [x[:prefix] for x in ids], [x[prefix : prefix + suffix] for x in ids]


@pytest.mark.parametrize("temperature,top_k,top_p", RULES)
def test_rule_is_what_hf_generate_samples_from(tokenizer, temperature, top_k, top_p):
    """HF's processed scores (output_scores: after temperature, top-k, top-p) give the rule's log-probs."""
    model = micro_model(tokenizer)
    out = model.generate(torch.tensor([[5, 6, 7, 8]]), do_sample=True, temperature=temperature, top_k=top_k or 0, top_p=top_p,
                         max_new_tokens=3, output_scores=True, output_logits=True, return_dict_in_generate=True,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=[])
    for raw, processed in zip(out.logits, out.scores):
        ours = DecodingRule(temperature, top_k, top_p).log_probs(raw)
        theirs = torch.log_softmax(processed.double(), -1)
        assert torch.equal(torch.isinf(ours), torch.isinf(theirs))
        assert torch.allclose(ours[~torch.isinf(ours)], theirs[~torch.isinf(theirs)], atol=1e-6)


def test_rule_matches_the_hand_reference_with_ties():
    """Ties at the k-th logit are all kept; top-p keeps the smallest most-likely set reaching p, at least one."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 40, generator=gen, dtype=torch.float64).mul(3).round().div(2)  # many exact ties
    for temperature, top_k, top_p in [r for r in RULES if r[2] == 1.0] + [(1.0, 7, 1.0), (1.0, 100, 1.0)]:
        ours = DecodingRule(temperature, top_k, top_p).log_probs(logits)
        for row in range(logits.shape[0]):
            values = logits[row].tolist()
            ref = torch.tensor([ref_rule_logprob(values, t, temperature, top_k, top_p) for t in range(len(values))],
                               dtype=torch.float64)
            assert torch.equal(torch.isinf(ours[row]), torch.isinf(ref)), (temperature, top_k, top_p)
            finite = ~torch.isinf(ref)
            assert torch.allclose(ours[row][finite], ref[finite], rtol=0, atol=1e-12)
    smooth = torch.randn(6, 40, generator=gen, dtype=torch.float64) * 2  # top-p without ties (tied tokens at its cut fall by sort order)
    for temperature, top_k, top_p in RULES:
        ours = DecodingRule(temperature, top_k, top_p).log_probs(smooth)
        for row in range(smooth.shape[0]):
            ref = torch.tensor([ref_rule_logprob(smooth[row].tolist(), t, temperature, top_k, top_p) for t in range(40)],
                               dtype=torch.float64)
            assert torch.equal(torch.isinf(ours[row]), torch.isinf(ref))
            assert torch.allclose(ours[row][~torch.isinf(ref)], ref[~torch.isinf(ref)], rtol=0, atol=1e-12)
    assert DecodingRule(1.0, None, 1e-9).log_probs(smooth).isfinite().sum(-1).eq(1).all()  # min_tokens_to_keep = 1


@pytest.mark.parametrize("temperature,top_k,top_p", RULES)
def test_exact_probability_equals_the_slow_reference(memorized, temperature, top_k, top_p):
    model_dir, members, non_members = memorized
    model, tokenizer = load_model(str(model_dir), "cpu")
    prefixes, suffixes = _split(tokenizer, members)
    p2, s2 = _split(tokenizer, non_members, 20, 12)
    prefixes, suffixes = prefixes + p2[:4], suffixes + s2[:4]
    rule = DecodingRule(temperature, top_k, top_p)
    batched = exact_logprobs(model, prefixes, suffixes, rule, batch_size=3, progress=False)
    for p, s, got in zip(prefixes, suffixes, batched):
        want = ref_log_p_exact(model, p, s, temperature, top_k, top_p)
        assert (got == -math.inf) == (want == -math.inf)
        if want != -math.inf:
            assert got == pytest.approx(want, rel=1e-6, abs=1e-6)
    if top_k == 5:  # a truncating rule cannot produce a non-member's unseen suffix: p_exact = 0
        assert any(x == -math.inf for x in batched[4:])


def test_sampled_verbatim_share_lies_in_the_binomial_interval_of_p_exact(memorized):
    """A memorized document at a temperature where p_exact is about 0.5: 400 samples, 99% interval."""
    model_dir, members, _ = memorized
    model, tokenizer = load_model(str(model_dir), "cpu")
    prefixes, suffixes = _split(tokenizer, members)
    prefix, suffix = prefixes[0], suffixes[0]

    def p_exact(t):
        return math.exp(exact_logprobs(model, [prefix], [suffix], DecodingRule(t, None, 0.95), progress=False)[0])

    low, high = 1.0, 20.0
    assert p_exact(low) > 0.5 > p_exact(high)
    for _ in range(14):
        mid = (low + high) / 2
        low, high = (mid, high) if p_exact(mid) > 0.5 else (low, mid)
    t = (low + high) / 2
    p = p_exact(t)
    assert 0.4 < p < 0.6
    samples = sample_suffixes(model, tokenizer, [prefix], ["doc"], [len(suffix)], 400, DecodingRule(t, None, 0.95), seed=7,
                              batch_size=100, progress=False)[0]
    verbatim = sum(s == suffix for s in samples)
    lo, hi = binom.interval(0.99, 400, p)
    assert lo <= verbatim <= hi, (verbatim, p)


def test_samples_are_reproducible_and_do_not_depend_on_the_batch(memorized):
    model_dir, members, non_members = memorized
    model, tokenizer = load_model(str(model_dir), "cpu")
    prefixes, _ = _split(tokenizer, members)
    prefixes = [p[: 8 + 6 * i] for i, p in enumerate(prefixes)]  # different lengths: padded batches
    keys, rule = [f"k{i}" for i in range(len(prefixes))], DecodingRule(1.5, 50, 0.95)
    one = sample_suffixes(model, tokenizer, prefixes, keys, [12] * 4, 5, rule, seed=3, batch_size=3, progress=False)
    other = sample_suffixes(model, tokenizer, prefixes, keys, [12] * 4, 5, rule, seed=3, batch_size=20, progress=False)
    alone = sample_suffixes(model, tokenizer, prefixes[2:3], keys[2:3], [12], 5, rule, seed=3, batch_size=1, progress=False)
    assert one == other and alone[0] == one[2]
    assert all(len(s) == 12 for ss in one for s in ss) and len({tuple(s) for s in one[0]}) > 1
    assert sample_suffixes(model, tokenizer, prefixes, keys, [12] * 4, 5, rule, seed=4, batch_size=3, progress=False) != one


def test_discoverable_rates_are_exact_in_log_space():
    mpmath.mp.dps = 60
    for log10_p in (-math.inf, -300, -30, -7, -3, -1, -0.3, -1e-3, -1e-9, -1e-15, 0.0):
        for n in DISCOVERABLE_N:
            for p in DISCOVERABLE_P:
                ln = log10_p * math.log(10)
                want = 1 - (1 - mpmath.power(10, log10_p)) ** n >= p if log10_p != -math.inf else False
                assert discoverable(ln, n, p) == bool(want), (log10_p, n, p)


def test_sampled_secret_rates_read_any_and_share():
    secrets = load_secrets(["builtin"])
    rows = [
        {"member": True, "true_text": "mail a@b.example", "samples_text": ["mail a@b.example", "no", "no", "a@b.example"]},
        {"member": True, "true_text": "mail c@d.example", "samples_text": ["no"] * 4},
        {"member": True, "true_text": "weather", "samples_text": ["to c@d.example", "no", "no", "no"]},
        {"member": False, "true_text": "weather", "samples_text": ["no"] * 4},
    ]
    email = sampled_secret_summary(rows, secrets)["email"]
    assert email["recall_any"] == 0.5 and email["recall_share"] == 2 / 8 and email["turns_with_secret"] == 2
    assert email["spill_any"] == 1.0 and email["spill_share"] == 0.25
    assert email["non_members"]["spill_any"] == 0.0 and email["non_members"]["spill_share"] == 0.0


@pytest.mark.slow
def test_audit_reports_sampled_and_exact_figures_that_agree_with_the_rows(memorized, tmp_path):
    model_dir, members, non_members = memorized
    out = tmp_path / "audit"
    assert main(["audit", "--model", str(model_dir), "--data", str(members), "--suffix-len", "32", "--prefix-len", "32",
                 "--samples", "6", "--temperature", "1.6", "--top-p", "0.9", "--top-k", "100", "--sample-seed", "1",
                 "--keep-samples", "--out", str(out), "--no-progress"]) == 0
    s = json.loads((out / "summary.json").read_text())["models"]["model"]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    sampled, exact = s["sampled"], s["extraction_probability"]
    assert sampled["samples"] == 6 and sampled["samples_total"] == 24
    assert all(len(r["samples_longest_run"]) == 6 and len(r["samples_text"]) == 6 for r in rows)
    assert all(r["prefix_ids"] and len(r["true_ids"]) == 32 for r in rows)
    assert sampled["any_verbatim_count"] == sum(r["samples_exact"] > 0 for r in rows)
    assert sampled["sample_verbatim_count"] == sum(r["samples_exact"] for r in rows)
    assert sampled["best_longest_run_mean"] == pytest.approx(sum(max(r["samples_longest_run"]) for r in rows) / 4)
    assert sampled["mean_longest_run_mean"] == pytest.approx(sum(sum(r["samples_longest_run"]) / 6 for r in rows) / 4)
    assert all((r["samples_exact"] > 0) == (32 in r["samples_longest_run"]) for r in rows)
    model, tokenizer = load_model(str(model_dir), "cpu")
    for r in rows:  # the row carries what it needs to recompute p_exact
        want = ref_log_p_exact(model, r["prefix_ids"], r["true_ids"], 1.6, 100, 0.9) / math.log(10)
        assert (r["log10_p_exact"] is None) == (want == -math.inf)
        if r["log10_p_exact"] is not None:
            assert r["log10_p_exact"] == pytest.approx(want, abs=1e-5)
    p = [0.0 if r["log10_p_exact"] is None else 10 ** r["log10_p_exact"] for r in rows]
    for n in DISCOVERABLE_N:
        for q in DISCOVERABLE_P:
            assert exact["discoverable_count"][str(n)][str(q)] == sum(1 - (1 - x) ** n >= q for x in p)
    md = (out / "report.md").read_text()
    assert "Greedy and sampled" in md and "Exact extraction probability" in md
    run = run_audit(AuditConfig(models=[str(model_dir)], data=str(members), suffix_len=32, prefix_len=32, progress=False,
                                extraction_probability=False))
    assert "extraction_probability" not in run["models"]["model"] and "sampled" not in run["models"]["model"]
    assert not any("log10_p_exact" in r or "samples_exact" in r for r in run["rows"])


@pytest.mark.parametrize("flags,message", [(["--temperature", "0"], "--temperature > 0"), (["--top-p", "1.5"], "--top-p <= 1"),
                                           (["--top-k", "0"], "--top-k >= 1"), (["--keep-samples"], "give --samples N")])
def test_bad_sampling_settings_are_refused_before_any_model_loads(memorized, tmp_path, capsys, flags, message):
    model_dir, members, _ = memorized
    assert main(["audit", "--model", str(model_dir), "--data", str(members), "--out", str(tmp_path / "o"), *flags]) != 0
    assert message in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_chat_audit_samples_turns_and_scans_every_sample_for_secrets(tmp_path):
    from chat_styles import chat_model_folder

    model = chat_model_folder(tmp_path / "m")
    chats = [{"messages": [{"role": "user", "content": f"Who do I write to about order {i}?"},
                           {"role": "assistant", "content": f"Write to help{i}@shop.example today."}]} for i in range(3)]
    data, held = tmp_path / "chats.jsonl", tmp_path / "held.jsonl"
    data.write_text("".join(json.dumps(c) + "\n" for c in chats))
    held.write_text(json.dumps({"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]}) + "\n")
    out = tmp_path / "audit"
    assert main(["audit", "--model", model, "--data", str(data), "--non-members", str(held), "--secrets", "builtin",
                 "--samples", "3", "--temperature", "0.7", "--top-p", "0.9", "--out", str(out), "--no-progress"]) == 0
    s = json.loads((out / "summary.json").read_text())["models"]["m"]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    email = s["sampled"]["secrets"]["email"]
    assert email["turns_with_secret"] == 3
    assert {"recall_any", "recall_share", "spill_any", "non_members"} <= set(email)
    assert s["sampled"]["samples_total"] == 9 and s["extraction_probability"]["documents"] == 3
    assert not any("samples_text" in r for r in rows)  # read by the scan, not kept without --keep-samples
    assert all(len(r["samples_longest_run"]) == 3 for r in rows)  # non-member turns are sampled for the spill scan too
    assert all("log10_p_exact" in r for r in rows if r["member"]) and not any("log10_p_exact" in r for r in rows if not r["member"])
    assert "recall, any sample" in (out / "report.md").read_text()
