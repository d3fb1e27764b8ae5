"""Documents to training examples: tokenize (text, chat, prompt/completion), fit to the row length, pack.

A *document* is one record in a format of ``goldfish.data.formats`` (ShareGPT/FastChat and Alpaca
records become ``messages``; content-part lists become strings), that is, in one of TRL's dataset
formats:
    text                ``{"text": str}``: every token supervised, EOS appended
    messages            ``{"messages": [{"role", "content"}, ...]}``: assistant turns supervised
                        (all, or only the last; a message with ``"train": false`` is not), see
                        ``goldfish.data.chat``
    prompt/completion   ``{"prompt": str, "completion": str}``: prompt and completion tokenized
                        apart and joined (as TRL does), EOS appended, only completion + EOS
                        supervised; or message lists (conversational), only the completion's
                        assistant messages supervised
plus optionally ``goldfish`` (``false`` opts it out of the goldfish mask), ``goldfish_k`` (its
own k) and ``protect`` (a string or a list of strings that must not leak from this record,
protected as literals on top of the run's ``--protect`` secrets).

A document longer than ``seq_len`` tokens (``fit_document``): text is split into chunks, each its
own document for the mask; a chat is, by default, truncated after its last assistant turn that
fits (every kept reply keeps its whole prompt; ``long_chats="drop"`` leaves it out, ``"split"``
chunks it as text is).

An *example* (what the collator sees) has ``input_ids``, ``labels`` (-100 where not supervised) and
``goldfish_k`` (the document's k, one float, ``inf`` = never dropped; a packed row has one float a
token instead), plus ``position_ids`` when packed and ``goldfish_protected`` (the protection
marker of ``goldfish.protect``, one int a token) when secrets are protected.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from goldfish.data.chat import IGNORE_INDEX, chat_encoding, require_offsets, supervised_runs
from goldfish.data.formats import FORMATS, detect_format, to_record
from goldfish.protect import token_marker
from goldfish.secrets import Secret, find_spans

LONG_CHATS = ("truncate", "drop", "split")
# The most characters of text one record may hold: the tokenizer holds a record whole (about 300
# bytes a character with its offsets: 3 GB here; a 53 MB record took 8.8 GB), so a longer one is
# refused with the fix (split it into records) instead of exhausting memory.
MAX_RECORD_CHARS = 10_000_000


def check_record_size(doc: dict) -> None:
    """ValueError when the record holds over MAX_RECORD_CHARS characters of text."""
    if (chars := _text_chars(doc)) > MAX_RECORD_CHARS:
        raise ValueError(f"the record holds {chars:,} characters of text; goldfish reads records of up to {MAX_RECORD_CHARS:,} "
                         "(the tokenizer holds one whole in memory): split it into several records")


def record_strings(value):
    """Every string of a record, nested lists and dicts included, in order."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from record_strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from record_strings(v)


def _text_chars(doc: dict) -> int:
    return sum(len(t) for t in record_strings(doc))


def secret_spans(doc: dict, secrets: list[Secret]) -> list[int]:
    """Per secret (in order), its occurrences in the record's strings (each string read on its own;
    the record's own ``protect`` list is not its text)."""
    texts = list(record_strings({k: v for k, v in doc.items() if k != "protect"}))
    return [sum(len(s.spans(t)) for t in texts) for s in secrets]


def empty_replies(doc: dict, text_field: str = "text", fmt: str = "auto") -> int:
    """The record's assistant messages (or string completion) with no text but whitespace: each is
    trained as the template's end-of-turn tokens only, which is rarely what a user meant."""
    doc = to_record(doc, document_format([k for k, v in doc.items() if v is not None], text_field, fmt))
    if isinstance(doc.get("completion"), str):
        messages = [{"role": "assistant", "content": doc["completion"]}]
    else:
        messages = doc.get("messages") or [*(doc.get("prompt") or []), *(doc.get("completion") or [])]
    return sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "assistant" and m.get("train") is not False
               and not str(m.get("content") or "").strip())


def document_format(columns, text_field: str = "text", fmt: str = "auto") -> str:
    """The format of records with these columns (``goldfish.data.formats.detect_format``), or ``fmt``
    when one is forced."""
    if fmt != "auto":
        if fmt not in FORMATS:
            raise ValueError(f"unknown --format {fmt!r}; choose auto or one of {', '.join(FORMATS)}")
        return fmt
    return detect_format(columns, text_field)


def document_k(doc: dict, default_k: float) -> float:
    """The k that applies to a document's tokens: its ``goldfish_k``, inf if ``goldfish`` is false.
    ValueError unless ``goldfish`` is absent or a boolean and ``goldfish_k`` absent or a number >= 2."""
    opt = doc.get("goldfish")
    if opt is not None and not isinstance(opt, bool):
        raise ValueError(f"'goldfish' must be true or false (a JSON boolean), got {opt!r}")
    if opt is False:
        return math.inf
    k = doc.get("goldfish_k")
    if k is None:
        return float(default_k)
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not k >= 2:
        raise ValueError(f"goldfish_k must be a number >= 2, got {k!r}")
    return float(k)


def record_secrets(doc: dict, secrets: list[Secret]) -> list[Secret]:
    """The run's secrets plus the record's own ``protect`` literals."""
    own = doc.get("protect")
    if own is None:
        return secrets
    own = [own] if isinstance(own, str) else own
    if not isinstance(own, list) or not all(isinstance(x, str) and x for x in own):
        raise ValueError(f"'protect' must be a non-empty string or a list of them, got {own!r}")
    return secrets + [Secret(x, literal=x) for x in own]


def marker_for(text: str, offsets, secrets: list[Secret]) -> list[int]:
    """The protection marker of tokens with these character ``offsets`` into ``text``."""
    return token_marker(offsets, find_spans(text, secrets)) if secrets else [0] * len(offsets)


def encode_texts(texts: list[str], tokenizer, secrets: list[list[Secret]] | None = None) -> list[tuple[list[int], list[int] | None]]:
    """(token ids, marker) of each text, tokenized as one batch, no special tokens; the marker where
    ``secrets`` (one list per text) is given, else None. The one path text takes into tokens."""
    if secrets is not None:
        require_offsets(tokenizer, "protected spans")
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=secrets is not None)
    return [(ids, None if secrets is None else marker_for(text, enc["offset_mapping"][i], secrets[i]))
            for i, (ids, text) in enumerate(zip(enc["input_ids"], texts))]


def encode_text_record(ids: list[int], marker: list[int] | None, eos: int) -> tuple[list[int], list[int], list[int] | None]:
    """(input_ids, labels, marker) of a text document from its tokens: EOS appended, every token supervised."""
    return ids + [eos], ids + [eos], None if marker is None else marker + [0]


class Encoded(NamedTuple):
    """One tokenized document: labels -100 where not supervised; ``marker`` (``goldfish.protect``)
    or None; ``template_drops`` (chats; ``goldfish.data.chat.template_drops``): per role with a
    non-empty message, whether the chat template left one of its messages out of the render ({} for
    text)."""

    input_ids: list[int]
    labels: list[int]
    marker: list[int] | None
    template_drops: dict[str, bool]


def encode_record(doc: dict, tokenizer, text_field: str = "text", assistant_turns: str = "all",
                  secrets: list[Secret] | None = None, fmt: str = "auto", system_into_user: bool = False) -> Encoded:
    """One document in any of the formats above (``fmt``: forced, or detected from its keys). The
    marker where ``secrets`` or the record's ``protect`` name something to protect (spans found on
    the text the tokens come from), else None. ``system_into_user``: chats' system prompts go into
    the next user turn (``goldfish.data.chat.fold_system_into_user``). A record holding over
    MAX_RECORD_CHARS characters is refused (ValueError)."""
    check_record_size(doc)
    doc = to_record(doc, document_format([k for k, v in doc.items() if v is not None], text_field, fmt))
    shape = detect_format(doc.keys(), text_field) if fmt in ("auto", "sharegpt", "alpaca") else fmt
    if secrets is not None or doc.get("protect") is not None:
        secrets = record_secrets(doc, list(secrets or []))
    if shape == "messages" or (shape == "prompt_completion" and isinstance(doc["prompt"], list)):
        if shape == "messages":
            messages, trained = doc["messages"], None
        else:
            if not isinstance(doc["completion"], list):
                raise ValueError("'prompt' and 'completion' must both be strings or both be message lists")
            messages = doc["prompt"] + doc["completion"]
            trained = tuple(len(doc["prompt"]) + i for i, m in enumerate(doc["completion"])
                            if m.get("role") == "assistant" and m.get("train") is not False)
        ids, labels, text, offsets, drops = chat_encoding(messages, tokenizer, assistant_turns, tools=doc.get("tools"),
                                                          train_roles=trained, with_offsets=secrets is not None,
                                                          system_into_user=system_into_user)
        return Encoded(ids, labels, None if secrets is None else marker_for(text, offsets, secrets), drops)
    eos = tokenizer.eos_token_id
    if shape == "prompt_completion":
        prompt, completion = doc["prompt"], doc["completion"]
        if not isinstance(prompt, str) or not isinstance(completion, str):
            raise ValueError("'prompt' and 'completion' must both be strings or both be message lists")
        (p, p_marker), (c, c_marker) = encode_texts([prompt, completion], tokenizer, None if secrets is None else [secrets] * 2)
        marker = None if secrets is None else p_marker + [m + max(p_marker, default=0) if m else 0 for m in c_marker] + [0]
        return Encoded(p + c + [eos], [IGNORE_INDEX] * len(p) + c + [eos], marker, {})
    text = doc.get(text_field)
    if not isinstance(text, str):
        raise ValueError(f"{text_field!r} must be a string, got {type(text).__name__}")
    (ids, marker), = encode_texts([text], tokenizer, None if secrets is None else [secrets])
    return Encoded(*encode_text_record(ids, marker, eos), {})


def encode_document(doc: dict, tokenizer, text_field: str = "text", assistant_turns: str = "all",
                    secrets: list[Secret] | None = None, fmt: str = "auto") -> tuple[list[int], list[int], list[int] | None]:
    """(input_ids, labels, marker) of ``encode_record``."""
    return encode_record(doc, tokenizer, text_field, assistant_turns, secrets, fmt)[:3]


def tokenize_document(doc: dict, tokenizer, text_field: str = "text", assistant_turns: str = "all",
                      system_into_user: bool = False) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of one document in any of the formats above (labels -100 = not supervised)."""
    ids, labels, _, _ = encode_record(doc, tokenizer, text_field, assistant_turns, system_into_user=system_into_user)
    return ids, labels


def _supervised(labels: list[int]) -> int:
    """Targets an example (or document) trains on: supervised labels after its first token."""
    return sum(x != IGNORE_INDEX for x in labels[1:])


def fit_document(ids: list[int], labels: list[int], k: float, seq_len: int, marker: list[int] | None = None,
                 chat: bool = False, long_chats: str = "truncate") -> tuple[list[dict], str, int]:
    """The examples of one tokenized document, each at most ``seq_len`` tokens; how it was fitted
    (``"whole"``, ``"split"``, ``"truncated"`` or ``"dropped"``); and how many of its supervised
    targets no example holds.

    Text (and chats with ``long_chats="split"``): consecutive chunks of ``seq_len`` tokens, each its own
    document for the mask (its context starts at the chunk, so a document is masked the same
    wherever it lands); chunks without a supervised target are left out. Chats longer than
    ``seq_len``: ``"truncate"`` keeps the tokens up to the end of the last supervised turn that ends
    within ``seq_len`` (later turns left out; none ends there: dropped), ``"drop"`` leaves the
    conversation out. ``marker``: the protection marker, kept as ``goldfish_protected``.
    """
    if long_chats not in LONG_CHATS:
        raise ValueError(f"--long-chats must be one of {', '.join(LONG_CHATS)}, got {long_chats!r}")
    if len(ids) > seq_len and chat and long_chats != "split":
        ends = [b for _, b in supervised_runs(labels) if b <= seq_len]
        if long_chats == "drop" or not ends:
            return [], "dropped", _supervised(labels)
        kept = _example(ids[: ends[-1]], labels[: ends[-1]], k, None if marker is None else marker[: ends[-1]])
        return [kept], "truncated", _supervised(labels) - _supervised(kept["labels"])
    out = []
    for start in range(0, len(ids), seq_len):
        chunk = _example(ids[start : start + seq_len], labels[start : start + seq_len], k,
                         None if marker is None else marker[start : start + seq_len])
        if _supervised(chunk["labels"]):
            out.append(chunk)
    status = "whole" if len(ids) <= seq_len else "split"
    return out, status if out else "dropped", _supervised(labels) - sum(_supervised(e["labels"]) for e in out)


def _example(ids, labels, k, marker) -> dict:
    return {"input_ids": ids, "labels": labels, "goldfish_k": k} | ({} if marker is None else {"goldfish_protected": marker})


def fit_counts(statuses: list[str], cut: int) -> dict:
    """The counts ``goldfish.json`` records of how documents were fitted to ``seq_len``."""
    return {**{s: statuses.count(s) for s in ("whole", "split", "truncated", "dropped")}, "supervised_targets_left_out": cut}


def build_examples(docs: list[dict], tokenizer, seq_len: int, default_k: float, text_field: str = "text",
                   assistant_turns: str = "all", secrets: list[Secret] | None = None, fmt: str = "auto",
                   long_chats: str = "truncate") -> list[dict]:
    """Tokenize documents and fit each into examples (in memory; ``prepare_dataset`` is the
    Arrow-backed, parallel, cached version of the same). ``secrets``: protect them (marker column)."""
    if secrets is None and any(doc.get("protect") is not None for doc in docs):
        secrets = []  # some records name their own: every example gets a marker
    examples = []
    for doc in docs:
        ids, labels, marker = encode_document(doc, tokenizer, text_field, assistant_turns, secrets, fmt)
        chat = document_format(doc.keys(), text_field, fmt) != "text"
        examples += fit_document(ids, labels, document_k(doc, default_k), seq_len, marker, chat, long_chats)[0]
    if not examples:
        raise ValueError("no training examples: every document is empty or has no supervised tokens")
    return examples


def pack_plan(lengths, seq_len: int) -> list[tuple[int, int]]:
    """Greedy in-order packing: (first, end) example indices of each row of at most ``seq_len`` tokens."""
    rows, first, used = [], 0, 0
    for i, n in enumerate(lengths):
        if used and used + n > seq_len:
            rows.append((first, i))
            first, used = i, 0
        used += n
    if used:
        rows.append((first, len(lengths)))
    return rows


def pack_row(examples: list[dict], seq_len: int, pad_token_id: int) -> dict:
    """One row of exactly ``seq_len`` tokens from consecutive examples.

    ``position_ids`` restart at 0 for each example (HF packing convention: the model then attends
    within documents only, and the goldfish mask sees the boundaries); ``goldfish_k`` becomes one
    float a token; the tail is padding with label -100 and k = inf (``goldfish_protected`` 0,
    ``goldfish_aligned`` -1).
    """
    carried = [(c, pad) for c, pad in (("goldfish_protected", 0), ("goldfish_aligned", -1)) if c in examples[0]]
    row = {"input_ids": [], "labels": [], "goldfish_k": [], "position_ids": []} | {c: [] for c, _ in carried}
    for ex in examples:
        n = len(ex["input_ids"])
        row["input_ids"] += ex["input_ids"]
        row["labels"] += ex["labels"]
        row["goldfish_k"] += [float(ex["goldfish_k"])] * n
        row["position_ids"] += range(n)
        for c, _ in carried:
            row[c] += list(ex[c])
    pad = seq_len - len(row["input_ids"])
    row["input_ids"] += [pad_token_id] * pad
    row["labels"] += [IGNORE_INDEX] * pad
    row["goldfish_k"] += [math.inf] * pad
    row["position_ids"] += range(pad)
    for c, value in carried:
        row[c] += [value] * pad
    return row


def pack_examples(examples: list[dict], seq_len: int, pad_token_id: int) -> list[dict]:
    """Pack examples greedily, in order, into rows of exactly ``seq_len`` tokens (see ``pack_row``)."""
    return [pack_row(examples[a:b], seq_len, pad_token_id) for a, b in pack_plan([len(e["input_ids"]) for e in examples], seq_len)]
