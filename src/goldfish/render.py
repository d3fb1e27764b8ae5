"""Show which tokens a goldfish mask drops, and which are protected: rich colours in a terminal,
plain markers otherwise, HTML in reports.

Plain text: a dropped token is wrapped in [[ ]]; a protected span in {{ }} (its dropped tokens
inside still in [[ ]]).
"""

from __future__ import annotations

import html
from dataclasses import dataclass

PLAIN_OPEN, PLAIN_CLOSE = "[[", "]]"
PROTECT_OPEN, PROTECT_CLOSE = "{{", "}}"
DROP_STYLE, PROTECT_STYLE = "bold white on red", "black on yellow"


def token_pieces(tokenizer, text: str, max_tokens: int | None = None) -> tuple[list[int], list[str], list[tuple[int, int]]]:
    """Token ids of ``text`` (no special tokens), the exact text span of each token, and the
    tokenizer's character offsets.

    Spans come from the tokenizer's offsets, so the pieces concatenate back to the text even when a
    token holds part of a multi-byte character. ValueError for a tokenizer without offsets (a Python one).
    """
    from goldfish.data.chat import require_offsets

    require_offsets(tokenizer, "showing a text's tokens")
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    if max_tokens is not None:
        ids, offsets = ids[:max_tokens], offsets[:max_tokens]
    pieces, prev = [], 0
    for i, (start, end) in enumerate(offsets):
        end = offsets[i + 1][0] if i + 1 < len(offsets) else end  # give whitespace gaps to the left token
        pieces.append(text[prev:end] if i else text[start:end])
        prev = end
    return ids, pieces, list(offsets)


def _marks(pieces, dropped, protected):
    """(piece, dropped, protected, opens a protected span, closes one) per token."""
    protected = protected or [0] * len(pieces)
    for i, (piece, drop, mark) in enumerate(zip(pieces, dropped, protected)):
        opens = bool(mark) and (i == 0 or protected[i - 1] != mark)
        closes = bool(mark) and (i + 1 == len(pieces) or protected[i + 1] != mark)
        yield piece, bool(drop), bool(mark), opens, closes


def render_rich(pieces: list[str], dropped: list[bool], protected: list[int] | None = None):
    """A rich ``Text``: dropped tokens bold white on red, kept protected ones black on yellow."""
    from rich.text import Text

    out = Text()
    for piece, drop, mark, _, _ in _marks(pieces, dropped, protected):
        out.append(piece, style=DROP_STYLE if drop else PROTECT_STYLE if mark else None)
    return out


def render_plain(pieces: list[str], dropped: list[bool], protected: list[int] | None = None) -> str:
    """Plain text: each dropped token in [[ ]], each protected span in {{ }}."""
    out = []
    for piece, drop, _, opens, closes in _marks(pieces, dropped, protected):
        out.append((PROTECT_OPEN if opens else "") + (f"{PLAIN_OPEN}{piece}{PLAIN_CLOSE}" if drop else piece)
                   + (PROTECT_CLOSE if closes else ""))
    return "".join(out)


def render_html(pieces: list[str], dropped: list[bool], protected: list[int] | None = None) -> str:
    """HTML (a <pre> block): dropped tokens in ``span.drop``, protected spans in ``span.protect``."""
    out = []
    for piece, drop, _, opens, closes in _marks(pieces, dropped, protected):
        body = f'<span class="drop">{html.escape(piece)}</span>' if drop else html.escape(piece)
        out.append(('<span class="protect">' if opens else "") + body + ("</span>" if closes else ""))
    return f'<pre class="mask">{"".join(out)}</pre>'


@dataclass(frozen=True)
class MaskView:
    """What ``mask_view`` shows: per text, the targets the rule drops, and its goldfish-align-v1 column
    (int64, -1 = own hash; None without ``near_duplicates="align"``); ``aligned``: the alignment of the texts."""

    dropped: list[list[bool]]
    columns: list
    aligned: object = None  # goldfish.data.near_duplicates.Aligned


def mask_view(ids_list: list[list[int]], cfg, markers: list | None = None, labels_list: list[list[int]] | None = None) -> MaskView:
    """The drops of the mask rule ``cfg`` (a ``GoldfishConfig``) on each token-id list of ``ids_list``, each
    one document (what ``goldfish mask`` shows, and the chat recipe's report): ``markers`` give each list's
    protection marker (``goldfish.data.tokenize.marker_for``; None: none); with ``near_duplicates="align"``
    the lists are one corpus for goldfish-align-v1, their supervised tokens those of ``labels_list``
    (default: every token)."""
    import numpy as np

    from goldfish.mask import goldfish_mask

    markers = markers or [None] * len(ids_list)
    aligned = None
    if cfg.near_duplicates == "align":
        from goldfish.data.near_duplicates import aligned_examples

        aligned = aligned_examples(ids_list, labels_list or ids_list, cfg.h, cfg.seed)
    columns = [None if aligned is None else aligned.column(n, len(ids)) for n, ids in enumerate(ids_list)]
    dropped = [goldfish_mask(np.asarray(ids, dtype=np.int64), cfg, protected=None if marker is None else np.asarray(marker),
                             aligned=column).tolist() for ids, marker, column in zip(ids_list, markers, columns)]
    return MaskView(dropped, columns, aligned)
