"""The audit on chat data (``messages`` or prompt/completion records): one row per supervised
assistant turn, prompted with the conversation rendered up to that turn, and the secret scan.

A turn's prompt is the token ids of the training render before the reply (its generation prompt
included: exactly the context the model trained the reply on); its true reply is the supervised
tokens (content and end-of-turn marker). The model decodes as many tokens as the true reply has.
"""

from __future__ import annotations

import numpy as np

from goldfish.data import tokenize_document
from goldfish.data.chat import supervised_runs
from goldfish.secrets import Secret


def chat_turns(docs: list[dict], tokenizer, context: int, text_field: str = "text", assistant_turns: str = "all") -> tuple[list[dict], int]:
    """Rows ``{"id", "turn", "_prefix", "_suffix"}`` (ids ``DOC#TURN``) and how many turns were skipped
    because prompt + reply do not fit the model's context (the prompt is cut from the left first)."""
    rows, skipped = [], 0
    for n, doc in enumerate(docs):
        try:
            ids, labels = tokenize_document(doc, tokenizer, text_field, assistant_turns)
        except ValueError as e:
            raise ValueError(f"record {n}: {e}") from None
        for turn, (a, b) in enumerate(supervised_runs(labels[1:])):  # a target needs a token before it
            a, b = a + 1, b + 1
            if b - a >= context:
                skipped += 1
                continue
            rows.append({"id": f"{doc.get('id', n)}#{turn}", "turn": turn, "_prefix": ids[max(0, a - (context - (b - a))) : a],
                         "_suffix": ids[a:b]})
    return rows, skipped


def secret_rates(rows: list[dict], secrets: list[Secret], training_values: dict[str, set[str]]) -> dict:
    """Per secret, over rows with ``true_text`` and ``generated_text``:

    recall  of the turns whose true reply holds the secret, the share whose generation holds one of
            the strings the true reply holds
    spill   of the other turns, the share whose generation holds any string the secret stands for
            (``training_values``: a literal, or the matches found in the training replies)
    """
    out = {}
    for s in secrets:
        known = training_values.get(s.name, set())
        hits, spills = [], []
        for r in rows:
            own = s.find(r["true_text"])
            if own:
                hits.append(any(v in r["generated_text"] for v in own))
            elif known:
                spills.append(any(v in r["generated_text"] for v in known))
        out[s.name] = {"recall": float(np.mean(hits)) if hits else None, "spill": float(np.mean(spills)) if spills else None,
                       "turns_with_secret": len(hits), "turns_without": len(spills)}
    return out


def training_values(rows: list[dict], secrets: list[Secret]) -> dict[str, set[str]]:
    """The strings each secret stands for: a literal itself; for a regex or detector, every match in
    the true replies of ``rows`` (the training replies)."""
    return {s.name: {s.literal} if s.literal is not None else set().union(*(s.find(r["true_text"]) for r in rows))
            for s in secrets}
