"""Show which tokens a goldfish mask drops: rich colours in a terminal, plain markers otherwise."""

from __future__ import annotations

import html

PLAIN_OPEN, PLAIN_CLOSE = "[[", "]]"


def token_pieces(tokenizer, text: str, max_tokens: int | None = None) -> tuple[list[int], list[str]]:
    """Token ids of ``text`` (no special tokens) and the exact text span of each token.

    Spans come from the tokenizer's offsets, so the pieces concatenate back to the text even when a
    token holds part of a multi-byte character.
    """
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    if max_tokens is not None:
        ids, offsets = ids[:max_tokens], offsets[:max_tokens]
    pieces, prev = [], 0
    for i, (start, end) in enumerate(offsets):
        end = offsets[i + 1][0] if i + 1 < len(offsets) else end  # give whitespace gaps to the left token
        pieces.append(text[prev:end] if i else text[start:end])
        prev = end
    return ids, pieces


def render_rich(pieces: list[str], dropped: list[bool]):
    """A rich ``Text``: dropped tokens bold white on red, kept ones plain."""
    from rich.text import Text

    out = Text()
    for piece, drop in zip(pieces, dropped):
        out.append(piece, style="bold white on red" if drop else None)
    return out


def render_plain(pieces: list[str], dropped: list[bool]) -> str:
    """Plain text with each dropped token wrapped in [[ ]]."""
    return "".join(f"{PLAIN_OPEN}{p}{PLAIN_CLOSE}" if d else p for p, d in zip(pieces, dropped))


def render_html(pieces: list[str], dropped: list[bool]) -> str:
    """HTML (a <pre> block) with dropped tokens highlighted."""
    body = "".join(
        f'<span class="drop">{html.escape(p)}</span>' if d else html.escape(p) for p, d in zip(pieces, dropped)
    )
    return f'<pre class="mask">{body}</pre>'
