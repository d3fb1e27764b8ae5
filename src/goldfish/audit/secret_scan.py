"""The secret scan of chat audits: which generated replies hold which secrets (recall and spill)."""

from __future__ import annotations

import numpy as np

from goldfish.secrets import Secret


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
