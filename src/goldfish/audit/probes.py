"""What the audit puts to a model, one ``Probe`` each: a text document's suffix after its prefix, or
a trained chat turn's reply after the conversation before it.

Text documents: the suffix is the document's last ``suffix_len`` tokens, the prefix the
``prefix_len`` tokens before it (default: all, up to the model's context); with ``offsets``,
``prefix_len`` tokens from each offset (suffix right after, id ``DOC@OFFSET``); with
``prefix_lens``, the suffix stays the document's last ``suffix_len`` tokens and each length L gives
a probe with the L tokens before it (id ``DOC@pL``). A document too short for the longest of the
``prefix_lens`` is skipped at every length (each is counted), so every length reads the same
documents. Membership scores and the held-out loss read the document as
training encodes it: its tokens and EOS (the last ``context`` of them), every token after the first
a target.

Chats (``messages`` or prompt/completion records): a probe per supervised assistant turn, id
``DOC#TURN``; the prompt is the training render before the reply (its generation prompt included),
cut from the left to fit the model's context; the true suffix is the reply's supervised tokens
(content and end-of-turn marker), which are the targets the scores read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from goldfish.audit.extraction import split_at_offset, split_document


@dataclass
class Probe:
    """One question to a model. ``scored_ids[-n_scored:]`` are the targets membership scores and the
    held-out loss read (each after the tokens before it); ``prefix`` / ``suffix``: the extraction
    prompt and the true continuation (empty: the probe is scored, not decoded)."""

    id: str
    member: bool
    text: str
    scored_ids: list[int]
    n_scored: int
    prefix: list[int] = field(default_factory=list)
    suffix: list[int] = field(default_factory=list)
    turn: int | None = None
    offset: int | None = None
    prefix_len: int | None = None  # set with --prefix-lens: the probe's prefix length
    prefix_start: int | None = None

    def row(self) -> dict:
        """The probe's fields in its results.jsonl row."""
        row = {"id": self.id, "member": self.member, "scored_tokens": self.n_scored}
        if self.suffix:
            row["prefix_tokens"] = len(self.prefix)
        for key in ("turn", "offset", "prefix_len", "prefix_start"):
            if getattr(self, key) is not None:
                row[key] = getattr(self, key)
        return row


def text_probes(docs: list[dict], tokenizer, member: bool, context: int, prefix_len: int | None, suffix_len: int,
                offsets: list[int] | None, extract: bool, prefix_lens: list[int] | None = None) -> tuple[list[Probe], int]:
    """Probes of text documents ``{"id", "text"}`` and how many were too short for prefix + suffix."""
    probes, skipped = [], 0
    for doc in docs:
        ids = tokenizer(doc["text"], add_special_tokens=False)["input_ids"]
        scored = (ids + [tokenizer.eos_token_id])[-context:]
        base = {"member": member, "text": doc["text"], "scored_ids": scored, "n_scored": len(scored) - 1}
        if not extract:
            probes.append(Probe(id=doc["id"], **base))
            continue
        if prefix_lens and split_document(ids, max(prefix_lens), suffix_len, context) is None:
            skipped += len(prefix_lens)  # too short for the longest prefix: left out at every length
            continue
        for offset, length in [(o, None) for o in offsets] if offsets is not None else [(None, n) for n in prefix_lens or [None]]:
            if offset is None:
                split = split_document(ids, length or prefix_len, suffix_len, context)
                start = len(ids) - suffix_len - len(split[0]) if split else 0
            else:
                split, start = split_at_offset(ids, offset, prefix_len, suffix_len, context), offset
            if split is None:
                skipped += 1
                continue
            name = doc["id"] if offset is None and length is None else f"{doc['id']}@{offset if length is None else f'p{length}'}"
            probes.append(Probe(id=name, prefix=split[0], suffix=split[1], offset=offset, prefix_len=length, prefix_start=start,
                                **base))
    return probes, skipped


def chat_probes(docs: list[dict], tokenizer, member: bool, context: int, text_field: str = "text",
                assistant_turns: str = "all", system_into_user: bool = False) -> tuple[list[Probe], int, dict]:
    """Probes of the trained assistant turns of chat records, how many turns were skipped because the
    reply alone does not fit the model's context, and the chat template's drops
    (``goldfish.data.chat.tally_drops`` of the records). A ValueError names the record."""
    from goldfish.data.chat import supervised_runs, tally_drops
    from goldfish.data.tokenize import encode_record

    probes, skipped, drops = [], 0, []
    for n, doc in enumerate(docs):
        try:
            ids, labels, _, roles = encode_record(doc, tokenizer, text_field, assistant_turns, system_into_user=system_into_user)
        except ValueError as e:
            raise ValueError(f"record {n}: {e}") from None
        drops.append(roles)
        for turn, (a, b) in enumerate(supervised_runs(labels[1:])):  # a target needs a token before it
            a, b = a + 1, b + 1
            if b - a >= context:
                skipped += 1
                continue
            prefix, suffix = ids[max(0, a - (context - (b - a))) : a], ids[a:b]
            probes.append(Probe(id=f"{doc.get('id', n)}#{turn}", member=member, text=tokenizer.decode(suffix, skip_special_tokens=True),
                                scored_ids=prefix + suffix, n_scored=len(suffix), prefix=prefix, suffix=suffix, turn=turn))
    return probes, skipped, tally_drops(drops)
