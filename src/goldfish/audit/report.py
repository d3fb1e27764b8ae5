"""Reports: ``results.jsonl``, ``summary.json``, ``report.md``, self-contained ``report.html`` and PNG
plots, every file written atomically; the audit's files as one set (its folder replaced whole).
``Report`` is the building block the experiments reuse."""

from __future__ import annotations

import base64
import html
import io
import json
import os
import platform
from pathlib import Path

from goldfish.cache import atomic_dir, check_writable, write_bytes_atomic, write_text_atomic

_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:1em 0;display:block;overflow-x:auto}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%}
pre{white-space:pre-wrap;background:#f8f8f8;padding:8px;border-radius:4px}
.same{background:#d7f5d7}.diff{background:#ffd6d6}.drop{background:#e0474c;color:#fff}.protect{background:#ffe680;outline:1px solid #c9a400}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:12px}.muted{color:#777}mark{background:#ffd54a;font-weight:600}"""


def versions() -> dict:
    import torch
    import transformers

    import goldfish

    return {"goldfish": goldfish.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version()}


def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


class Report:
    """Collects sections, then writes report.md + report.html (+ the PNGs) atomically."""

    def __init__(self, title: str):
        self.title = title
        self.md: list[str] = [f"# {title}\n"]
        self.html: list[str] = [f"<h1>{html.escape(title)}</h1>"]
        self.images: dict[str, bytes] = {}

    def heading(self, text: str) -> None:
        self.md.append(f"\n## {text}\n")
        self.html.append(f"<h2>{html.escape(text)}</h2>")

    def paragraph(self, text: str) -> None:
        self.md.append(f"{text}\n")
        self.html.append(f"<p>{html.escape(text)}</p>")

    def table(self, headers: list[str], rows: list[list]) -> None:
        self.md.append("| " + " | ".join(headers) + " |\n|" + "---|" * len(headers))
        self.md += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
        self.md.append("")
        head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>" for row in rows)
        self.html.append(f"<table><tr>{head}</tr>{body}</table>")

    def image(self, filename: str, png: bytes, caption: str) -> None:
        self.images[filename] = png
        self.md.append(f"![{caption}]({filename})\n")
        data = base64.b64encode(png).decode()
        self.html.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")

    def comparison(self, label: str, context: str, generated: str, true: str, diverge_at_char: int) -> None:
        """Generated vs true text side by side; the shared start green, the rest red (divergence)."""
        cut = max(0, min(diverge_at_char, len(generated)))
        self.md.append(f"**{label}**\n\n…{context.strip()[-200:]} ⟶\n\n| generated | true |\n|---|---|\n"
                       f"| {_md_cell(generated[:cut])}⟦diverges⟧{_md_cell(generated[cut:])} | {_md_cell(true)} |\n")
        gen_html = (f'<span class="same">{html.escape(generated[:cut])}</span>'
                    f'<span class="diff">{html.escape(generated[cut:])}</span>')
        self.html.append(f"<h3>{html.escape(label)}</h3><p class='muted'>…{html.escape(context.strip()[-200:])} ⟶</p>"
                         f"<div class='pair'><div><b>generated</b><pre>{gen_html}</pre></div>"
                         f"<div><b>true</b><pre>{html.escape(true)}</pre></div></div>")

    def raw(self, markdown: str, html_text: str) -> None:
        self.md.append(markdown)
        self.html.append(html_text)

    def write(self, out: str | Path) -> None:
        out = Path(out)
        for name, png in self.images.items():
            write_bytes_atomic(out / name, png)
        write_text_atomic(out / "report.md", "\n".join(self.md) + "\n")
        page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                f"<style>{_CSS}</style></head><body>{''.join(self.html)}</body></html>")
        write_text_atomic(out / "report.html", page)


def settings_block(report: Report, result: dict) -> None:
    """A "Settings" section: the result's settings and wall time, with package versions, as JSON."""
    report.heading("Settings")
    text = json.dumps({"settings": result["settings"], "versions": versions(), "wall_time_s": result["wall_time_s"]}, indent=1)
    report.raw(f"```json\n{text}\n```\n", f"<pre>{html.escape(text)}</pre>")


def _md_cell(text: str) -> str:
    return html.escape(text).replace("|", "\\|").replace("\n", "↵ ")


def histogram_png(values: dict[str, list[float]], xlabel: str, title: str, bins=None, ylabel: str = "documents") -> bytes:
    """Overlaid histograms, one per series (legend shows the mean), as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    bins = bins if bins is not None else np.linspace(0, 1, 21)
    for name, vals in values.items():
        ax.hist(vals, bins=bins, alpha=0.55, label=f"{name} (mean {np.mean(vals):.2f})", edgecolor="black", linewidth=0.4)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return figure_png(fig)


def figure_png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


SUMMARY_COLUMNS = [
    ("documents", "docs"), ("skipped_too_short", "skipped"), ("exact_match_rate", "verbatim"),
    ("token_match_rate", "token match"), ("rouge_l_mean", "Rouge-L"), ("rouge_l_tokens_mean", "Rouge-L (tokens)"),
    ("longest_run_mean", "longest run (mean)"), ("longest_run_max", "longest run (max)"),
]


def summary_rows(models: dict) -> tuple[list[str], list[list]]:
    headers = ["model"] + [label for _, label in SUMMARY_COLUMNS]
    return headers, [[name] + [s.get(key, "") for key, _ in SUMMARY_COLUMNS] for name, s in models.items()]


def add_examples(report: Report, rows: list[dict], per_model: int = 3) -> None:
    """The most-memorized documents of each model, generated vs true, divergence marked."""
    by_model: dict[str, list[dict]] = {}
    for r in rows:
        if r["member"] and "generated" in r:
            by_model.setdefault(r["model"], []).append(r)
    for name, rs in by_model.items():
        for r in sorted(rs, key=lambda r: (-r["longest_run"], -(r["rouge_l"] or 0.0)))[:per_model]:
            cut = len(os.path.commonprefix([r["generated"], r["true_suffix"]]))
            rouge = "undefined (no words)" if r["rouge_l"] is None else f"{r['rouge_l']:.2f}"
            label = (f"{name} · {r['id']} · longest run {r['longest_run']} tokens, Rouge-L {rouge}"
                     f"{' · verbatim' if r['exact_match'] else ''}")
            report.comparison(label, r["prefix_tail"], r["generated"], r["true_suffix"], cut)


def _rate(v) -> str:
    return "—" if v is None else f"{100 * v:.0f}%"


def add_secrets(report: Report, models: dict, rows: list[dict], per_model: int = 5) -> None:
    """Recall and spill per model and secret, then generations that hold a training secret (marked)."""
    report.heading("Secrets")
    report.paragraph("recall: of the turns whose training reply holds the secret, the share whose generation holds it too; "
                     "spill: of the other turns, the share whose generation holds a string of that secret found in the "
                     "training replies. Non-member columns: the same on --non-members prompts.")
    table = []
    for name, s in models.items():
        for secret, m in s.get("secrets", {}).items():
            non = m.get("non_members", {})
            table.append([name, secret, _rate(m["recall"]), m["turns_with_secret"], _rate(m["spill"]),
                          _rate(non.get("recall")), _rate(non.get("spill"))])
    report.table(["model", "secret", "recall", "turns with it", "spill", "non-member recall", "non-member spill"], table)
    for name in models:
        leaking = [r for r in rows if r["model"] == name and r.get("leaked")][:per_model]
        if not leaking:
            continue
        report.heading(f"Leaking generations: {name}")
        for r in leaking:
            text = r["generated_text"]
            marked_md, marked_html = text, html.escape(text)
            for v in r["leaked"]:
                marked_md = marked_md.replace(v, f"**{v}**")
                marked_html = marked_html.replace(html.escape(v), f"<mark>{html.escape(v)}</mark>")
            who = "member" if r["member"] else "non-member"
            report.raw(f"*{r['id']}* ({who}) …{_md_cell(r['prefix_tail'][-120:])} ⟶\n\n> {marked_md.strip()}\n",
                       f"<p class='muted'>{html.escape(r['id'])} ({who}) …{html.escape(r['prefix_tail'][-120:])} ⟶</p>"
                       f"<pre>{marked_html.strip()}</pre>")


def offsets_png(models: dict) -> bytes:
    """Verbatim rate and mean longest run against the prefix's start offset, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), dpi=110)
    for name, s in models.items():
        offsets = sorted(s.get("by_offset", {}), key=int)
        for ax, key in zip(axes, ("exact_match_rate", "longest_run_mean")):
            ax.plot([int(o) for o in offsets], [s["by_offset"][o][key] for o in offsets], marker="o", label=name)
    for ax, title in zip(axes, ("verbatim rate", "longest verbatim run (mean tokens)")):
        ax.set_xlabel("prefix start (tokens into the document)")
        ax.set_title(title, fontsize=10)
        ax.legend()
    fig.tight_layout()
    return figure_png(fig)


def _extraction_notes(report: Report, result: dict) -> None:
    """Undefined text Rouge-L, prefixes that start mid-document, and the per-offset view."""
    models = result["models"]
    undefined = {n: s["rouge_l_undefined"] for n, s in models.items() if s.get("rouge_l_undefined")}
    if undefined:
        n = max(undefined.values())
        report.paragraph(f"Text Rouge-L is undefined for {n} document(s) whose true suffix has no alphanumeric word (rouge-score "
                         "scores them 0 even when reproduced exactly); they are left out of the Rouge-L mean and counted in "
                         "summary.json as rouge_l_undefined. Token Rouge-L covers them.")
    if result["settings"].get("offsets"):
        report.heading("By prefix offset")
        rows = [[n, int(o), m["documents"], m["exact_match_rate"], m["longest_run_mean"], m["rouge_l_tokens_mean"]]
                for n, s in models.items() for o, m in sorted(s.get("by_offset", {}).items(), key=lambda kv: int(kv[0]))]
        report.table(["model", "prefix offset", "docs", "verbatim", "longest run (mean)", "Rouge-L (tokens)"], rows)
        report.image("offsets.png", offsets_png(models), "Verbatim rate and longest run against where the prefix starts")
    elif any(s.get("prefix_mid_document") for s in models.values()):
        n = max(s.get("prefix_mid_document", 0) for s in models.values())
        report.paragraph(f"Warning: for {n} document(s) the prefix starts mid-document (--prefix-len shorter than the text "
                         "before the suffix). A model with absolute positions saw those tokens at other positions in "
                         "training and may fail to continue text it did memorize; the extraction convention is a prefix "
                         "that starts where the document starts (the default, or --offsets 0).")


AUDIT_FILES = ("results.jsonl", "summary.json", "report.md", "report.html", "rouge_l_hist.png", "offsets.png")


def check_out_folder(out: str | Path) -> None:
    """Raise ValueError unless ``write_report`` can replace ``out`` whole: it and its parent can be
    written, and it is new, empty, or holds nothing but a previous audit's files (AUDIT_FILES)."""
    out = Path(out).absolute()
    check_writable(out, "--out")
    check_writable(out.parent, "--out")  # the new folder is made beside it, then renamed in
    if Path.cwd().is_relative_to(out):
        raise ValueError(f"--out {out}: the audit replaces its --out folder whole; give a folder that is not the current one or above it")
    if out.is_dir():
        other = sorted(p.name for p in out.iterdir() if p.name not in AUDIT_FILES)
        if other:
            raise ValueError(f"--out {out} holds files that are not an audit's ({', '.join(other[:5])}"
                             f"{', ...' if len(other) > 5 else ''}); the audit replaces the whole folder: give a new or empty one")


def write_report(result: dict, out: str | Path) -> None:
    """The audit's files (AUDIT_FILES: results.jsonl, summary.json, report.md, report.html and the
    plots) as one set: written into a temp folder beside ``out``, which then replaces ``out`` in one
    rename, so a reader never sees files of two runs together (see ``check_out_folder``)."""
    out = Path(out).absolute()
    rows = result["rows"]
    summary = {"models": result["models"], "settings": result["settings"], "wall_time_s": result["wall_time_s"],
               "versions": versions()}
    report = Report("Memorization audit")
    chat = result["settings"].get("kind") == "chat"
    protocol = ("each trained assistant turn, prompted with the conversation before it (generation prompt included), "
                "decoded for as many tokens as the true reply" if chat else
                f"suffix of {result['settings']['suffix_len']} tokens after a prefix of "
                f"{result['settings']['prefix_len'] or 'all preceding'} tokens")
    report.paragraph(f"{len(result['models'])} model(s) on {result['settings']['data']}: {protocol}, "
                     f"{'greedy' if result['settings']['beams'] == 1 else str(result['settings']['beams']) + '-beam'} decoding. "
                     f"Wall time {result['wall_time_s']:.1f} s.")
    report.heading("Extraction")
    report.table(*summary_rows(result["models"]))
    _extraction_notes(report, result)
    hist = {name: [r["rouge_l"] for r in rows if r["model"] == name and r["member"] and r.get("rouge_l") is not None]
            for name in result["models"]}
    hist = {k: v for k, v in hist.items() if v}
    if hist:
        unit, what = ("turns", "reply") if chat else ("documents", "suffix")
        report.image("rouge_l_hist.png", histogram_png(hist, f"Rouge-L of generated vs true {what}", "Extraction Rouge-L", ylabel=unit),
                     f"Rouge-L per {unit[:-1]}, one histogram per model")
    mia = {name: s["mia"] for name, s in result["models"].items() if "mia" in s}
    if mia:
        report.heading("Membership inference")
        scores = [k for k in next(iter(mia.values())) if k != "non_members"]
        report.table(["model", "score", "ROC AUC", "TPR @ 0.1% FPR", "TPR @ 1% FPR"],
                     [[name, k, m[k]["auc"], m[k]["tpr_at_0.1%_fpr"], m[k]["tpr_at_1%_fpr"]] for name, m in mia.items() for k in scores])
    if any("secrets" in s for s in result["models"].values()):
        add_secrets(report, result["models"], rows)
    report.heading("Most-memorized turns" if result["settings"].get("kind") == "chat" else "Most-memorized documents")
    add_examples(report, rows)
    settings_block(report, result)
    with atomic_dir(out) as tmp:
        (tmp / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        report.write(tmp)
