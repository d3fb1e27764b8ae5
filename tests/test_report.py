"""The audit's HTML report: long unbroken text wraps, every reproduced run is marked, the secrets
table leaves out secrets found nowhere and gives the non-member recall its denominator."""

import re

from goldfish.audit.report import add_examples, add_secrets
from goldfish.report import Report


def _html(tmp_path, report):
    report.write(tmp_path)
    return (tmp_path / "report.html").read_text()


def test_long_generations_wrap_and_every_reproduced_run_is_marked(tmp_path):
    true = "Hi Nadia, your refund of $36 is on its way. " + "x" * 400
    generated = "Hi Nadia, our " + "y" * 300 + " refund of $36 is on its way."
    at = generated.index("refund")
    row = {"model": "m", "id": "d#0", "member": True, "longest_run": 9, "rouge_l": 0.5, "exact_match": False,
           "prefix_tail": "user: where is my refund?", "generated": generated, "true_suffix": true,
           "reproduced": {"generated": [[0, 9], [at, len(generated)]], "true": [[0, 9], [true.index("refund"), true.index(" x")]]}}
    report = Report("audit")
    add_examples(report, [row])
    page = _html(tmp_path, report)
    css = re.search(r"<style>(.*)</style>", page, re.S).group(1)
    assert re.search(r"pre\{[^}]*white-space:pre-wrap[^}]*overflow-wrap:anywhere", css)
    assert "grid-template-columns:minmax(0,1fr) minmax(0,1fr)" in css  # a long word cannot squeeze the other column
    same = re.findall(r'<span class="same">(.*?)</span>', page)
    assert same == ["Hi Nadia,", "refund of $36 is on its way.", "Hi Nadia,", "refund of $36 is on its way."]
    assert re.findall(r'<span class="diff">(.*?)</span>', page) == [" our " + "y" * 300 + " "]
    md = (tmp_path / "report.md").read_text()
    assert "**refund of $36 is on its way.**" in md and md.count("**Hi Nadia,**") == 2


def test_secrets_table_leaves_out_absent_secrets_and_shows_the_denominator(tmp_path):
    models = {"m": {"secrets": {
        "builtin:email": {"recall": 0.5, "turns_with_secret": 4, "spill": 0.0, "turns_without": 6,
                          "non_members": {"recall": 0.25, "turns_with_secret": 8, "spill": 0.0}},
        "builtin:ipv4": {"recall": None, "turns_with_secret": 0, "spill": None, "turns_without": 10,
                         "non_members": {"recall": None, "turns_with_secret": 0, "spill": None}}}}}
    report = Report("audit")
    add_secrets(report, models, [])
    page = _html(tmp_path, report)
    rows = re.findall(r"<tr>(.*?)</tr>", page)
    assert len(rows) == 2 and "builtin:email" in rows[1] and "<td>25% of 8 turns</td>" in rows[1]
    assert "Not in any training or held-out reply (left out of the table): builtin:ipv4." in page


def test_token_runs_become_the_character_spans_of_the_decoded_text(tokenizer):
    from goldfish.audit.metrics import reproduced_runs
    from goldfish.audit.runner import char_spans

    true = tokenizer("Your refund of 36 dollars for order 4417 is on its way to you today.", add_special_tokens=False)["input_ids"]
    generated = tokenizer("Sorry! refund of 36 dollars for order 4417 is late.", add_special_tokens=False)["input_ids"]
    gen_runs, true_runs = reproduced_runs(generated, true)
    text = tokenizer.decode(generated)
    (a, b), = char_spans(tokenizer, generated, gen_runs)
    assert text[a:b].strip() == "refund of 36 dollars for order 4417 is"
    (a, b), = char_spans(tokenizer, true, true_runs)
    assert tokenizer.decode(true)[a:b].strip() == "refund of 36 dollars for order 4417 is"
