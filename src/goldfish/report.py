"""The report builder every command shares (audit, eval, experiments): ``Report`` collects sections
and writes ``report.md`` and a self-contained ``report.html`` (images embedded) with the PNGs, every
file atomically; a settings block with the package versions; matplotlib figures as PNG bytes."""

from __future__ import annotations

import base64
import html
import io
import json
import platform
from pathlib import Path

from goldfish.cache import write_bytes_atomic, write_text_atomic

# td: overflow-wrap break-word, not anywhere: anywhere makes one character a cell's narrowest width, so the
# table layout splits short words (model names) to fit wide tables; <pre> keeps anywhere (generations, one per column)
# and scrolls past 30 lines (a model that degenerates into newlines would otherwise fill pages with an empty box)
_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:1em 0;display:block;overflow-x:auto}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%}
pre{white-space:pre-wrap;overflow-wrap:anywhere;word-break:break-word;background:#f8f8f8;padding:8px;border-radius:4px;max-height:30em;overflow-y:auto}
td{overflow-wrap:break-word}
.same{background:#d7f5d7}.diff{background:#ffd6d6}.drop{background:#e0474c;color:#fff}.protect{background:#ffe680;outline:1px solid #c9a400}
.pair{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:12px}.muted{color:#777}mark{background:#ffd54a;font-weight:600}"""


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

    def comparison(self, label: str, context: str, generated: str, true: str, generated_runs: list, true_runs: list) -> None:
        """Generated vs true text side by side. ``*_runs``: [start, end) character spans of each text
        that the other reproduces: green (bold in markdown); the rest of the generation red."""
        md = lambda text, runs: "".join(f"**{md_cell(part)}**" if same else md_cell(part) for part, same in _parts(text, runs))  # noqa: E731
        self.md.append(f"**{label}**\n\n…{context.strip()[-200:]} ⟶\n\n| generated | true |\n|---|---|\n"
                       f"| {md(generated, generated_runs)} | {md(true, true_runs)} |\n")
        gen_html = "".join(f'<span class="{"same" if same else "diff"}">{html.escape(part)}</span>'
                           for part, same in _parts(generated, generated_runs))
        true_html = "".join(f'<span class="same">{html.escape(part)}</span>' if same else html.escape(part)
                            for part, same in _parts(true, true_runs))
        self.html.append(f"<h3>{html.escape(label)}</h3><p class='muted'>…{html.escape(context.strip()[-200:])} ⟶</p>"
                         f"<div class='pair'><div><b>generated</b><pre>{gen_html}</pre></div>"
                         f"<div><b>true</b><pre>{true_html}</pre></div></div>")

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


def _parts(text: str, runs: list) -> list[tuple[str, bool]]:
    """``text`` cut at the [start, end) spans ``runs`` (sorted, disjoint): (part, inside a span), empty parts left out."""
    parts, at = [], 0
    for a, b in runs:
        parts += [(text[at:a], False), (text[a:b], True)]
        at = b
    parts.append((text[at:], False))
    return [(p, same) for p, same in parts if p]


def settings_block(report: Report, result: dict) -> None:
    """A "Settings" section: the result's settings and wall time, with package versions, as JSON."""
    report.heading("Settings")
    text = json.dumps({"settings": result["settings"], "versions": versions(), "wall_time_s": result["wall_time_s"]}, indent=1)
    report.raw(f"```json\n{text}\n```\n", f"<pre>{html.escape(text)}</pre>")


def with_interval(value, interval=None, fmt: str = "{:.3f}") -> str:
    """``value`` formatted, with its interval as ``[low, high]`` when there is one; "—" for None."""
    if value is None:
        return "—"
    text = fmt.format(value)
    return text if not interval or interval[0] is None else f"{text} [{fmt.format(interval[0])}, {fmt.format(interval[1])}]"


def md_cell(text: str) -> str:
    """Text safe inside a markdown table cell (escaped, pipes and newlines kept visible)."""
    return html.escape(text).replace("|", "\\|").replace("\n", "↵ ")


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (reports are files, never windows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def histogram_png(values: dict[str, list[float]], xlabel: str, title: str, bins=None, ylabel: str = "documents") -> bytes:
    """Overlaid histograms, one per series (legend shows the mean), as PNG bytes."""
    import numpy as np

    plt = pyplot()
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
    """A matplotlib figure as PNG bytes (the figure is closed)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    pyplot().close(fig)
    return buf.getvalue()


def loss_curves_png(curves: dict[str, list[dict]], loss_key: str = "eval_loss") -> bytes:
    """The paper's Fig. 5 view: one line per run of ``loss_key`` against the input tokens seen (left)
    and against the supervised tokens, the loss terms (right). ``curves``: {run: [{"input_tokens",
    "supervised_tokens", loss_key}, ...]}."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110, sharey=True)
    for name, points in curves.items():
        for ax, x in zip(axes, ("input_tokens", "supervised_tokens")):
            ax.plot([p[x] for p in points], [p[loss_key] for p in points], marker="o", ms=3, label=name)
    axes[0].set_xlabel("input tokens seen")
    axes[1].set_xlabel("supervised tokens (loss terms) seen")
    axes[0].set_ylabel("held-out loss (nats/token)")
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return figure_png(fig)
