"""The secret scan of chat audits: which generated replies hold which secrets (recall and spill)."""

from __future__ import annotations

import numpy as np

from goldfish.secrets import Secret


def secret_rates(rows: list[dict], secrets: list[Secret], training_values: dict[str, set[str]],
                 texts_key: str = "generated_text") -> dict:
    """Per secret, over rows with ``true_text`` and the generation(s) ``texts_key`` (one text, or a
    list: the sampled replies ``samples_text``):

    recall  of the turns whose true reply holds the secret, the share where a generation holds one of
            the strings the true reply holds (with several generations: any of them)
    spill   of the other turns, the share where a generation holds any string the secret stands for
            (``training_values``: a literal, or the matches found in the training replies)
    With a list, also ``recall_share`` / ``spill_share``: the same over all the generations.
    """
    out = {}
    for s in secrets:
        known = training_values.get(s.name, set())
        hits, spills = [], []
        for r in rows:
            texts = r[texts_key] if isinstance(r[texts_key], list) else [r[texts_key]]
            own = s.find(r["true_text"])
            if own:
                hits.append([any(v in t for v in own) for t in texts])
            elif known:
                spills.append([any(v in t for v in known) for t in texts])
        rates = {"turns_with_secret": len(hits), "turns_without": len(spills)}
        for name, found in (("recall", hits), ("spill", spills)):
            rates[name] = float(np.mean([any(f) for f in found])) if found else None
            if rows and isinstance(rows[0][texts_key], list):
                rates[f"{name}_share"] = float(np.mean([x for f in found for x in f])) if found else None
        out[s.name] = rates
    return out


def training_values(rows: list[dict], secrets: list[Secret]) -> dict[str, set[str]]:
    """The strings each secret stands for: a literal itself; for a regex or detector, every match in
    the true replies of ``rows`` (the training replies)."""
    return {s.name: {s.literal} if s.literal is not None else set().union(*(s.find(r["true_text"]) for r in rows))
            for s in secrets}
