"""The audit's HTML report: long unbroken text wraps, every reproduced run is marked, the secrets
table leaves out secrets found nowhere and gives the non-member recall its denominator."""

import html
import json
import re
import shutil
import subprocess

import pytest

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


_LINES_SCRIPT = """<script>
const lines = [...document.querySelectorAll('td')].map(td => {
  const range = document.createRange(); range.selectNodeContents(td);
  return [td.textContent, new Set([...range.getClientRects()].map(r => Math.round(r.top))).size];
});
document.body.setAttribute('data-lines', JSON.stringify(lines));
document.body.setAttribute('data-pre', JSON.stringify([...document.querySelectorAll('pre')].map(p => p.getBoundingClientRect().height)));
</script>"""


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs headless chromium")
def test_a_wide_table_never_splits_a_word_in_a_browser(tmp_path):
    """Laid out by headless chromium at 1280 px (the audit's table of ten columns, intervals in them):
    a cell wraps at its spaces only, so "standard" stays whole and each value on as few lines as it has words;
    a generation of 300 newlines (a degenerate model) scrolls in a box of 30 lines, not pages of blank."""
    report = Report("audit")
    report.comparison("m · d#0", "user: hi", "\n" * 300, "Hello, how can I help?", [], [])
    headers = ["model", "docs/turns", "verbatim", "longest run (mean)", "MIA loss AUC", "held-out loss (nats/token)",
               "Δ held-out loss vs standard", "repeated 4-grams (generated / true)", "Δ repeated 4-grams vs standard", "flags"]
    report.table(headers, [[name, 4, 0.0, 3.0, "1.00 [1.00, 1.00]", "7.980 [7.728, 8.244]", "+8.6% [+6.8%, +10.3%]",
                            "0.692 (true 0.000)", "+0.077 [-0.192, +0.346]", "—"] for name in ("standard", "k=2", "k=8")])
    page = tmp_path / "report.html"
    report.write(tmp_path)
    page.write_text(page.read_text().replace("</body>", _LINES_SCRIPT + "</body>"))
    dom = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,2400",
                          "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    lines = json.loads(html.unescape(re.search(r'data-lines="([^"]*)"', dom).group(1)))
    assert len(lines) == 30
    for text, n in lines:
        assert n <= len(text.split()), (text, n)
    heights = json.loads(html.unescape(re.search(r'data-pre="([^"]*)"', dom).group(1)))
    assert len(heights) == 2 and max(heights) < 40 * 20  # 30 lines of ~16 px text and the padding; unbounded: ~300 lines
