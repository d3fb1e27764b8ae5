"""Assistant-only labels for chat conversations with any chat template.

Templates with ``{% generation %}`` spans: HF's ``return_assistant_tokens_mask`` marks the assistant
tokens; its j-th run of marked tokens is the j-th assistant message.

Templates without them (ChatML, Llama-3, Mistral, Gemma, Phi styles): each assistant turn i is found
*as text*. Rendering ``messages[:i]`` with the generation prompt gives the text before the reply;
rendering ``messages[:i + 1]`` gives the text up to its end; the reply span is what lies between,
trailing whitespace removed (so it is the content plus the template's end-of-turn marker). Spans map
to tokens through the tokenizer's character offsets on the full render: a token is supervised iff
its characters overlap the span. Token lists are never compared (BPE merges across boundaries).
Checked for every turn: each partial render is a text prefix of the full render (after removing
a final EOS that some templates, like Phi-3's, add to every non-generation render), the content
appears in its span, and supervised tokens reach outside the span by whitespace only; otherwise a
ValueError names the turn.

Every template: each message's content (stripped; empty ones aside) must appear somewhere in the
full render, or the template dropped (or rewrote) it. ``chat_encoding`` reports, per role present,
whether a message of it is missing (``template_drops``: a template without a system branch, one that
skips tool messages or keeps only the last system message); ``fold_system_into_user`` is the fix
for system prompts (``--system-into-user``).
"""

from __future__ import annotations

import contextlib
import re
import signal
import threading

from goldfish.data.formats import normalize_messages

IGNORE_INDEX = -100
RENDER_TIME_LIMIT_S = 10.0  # the longest one render of a conversation may take (real templates: milliseconds)
_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")


def has_generation_tags(tokenizer) -> bool:
    template = tokenizer.chat_template
    templates = template.values() if isinstance(template, dict) else [template or ""]
    return any(_GENERATION_TAG.search(t) for t in templates)


def _clean(message: dict) -> dict:
    """A message as the template should see it: without our ``train`` key and without the None
    values that Arrow adds for keys other messages have."""
    return {k: v for k, v in message.items() if v is not None and k != "train"}


def trained_turns(messages: list[dict], assistant_turns: str = "all") -> list[int]:
    """Indices of the assistant messages to supervise: all of them (``assistant_turns="all"``) or only
    the last (``"last"``), minus messages with ``"train": false``."""
    if assistant_turns not in ("all", "last"):
        raise ValueError(f"assistant_turns must be 'all' or 'last', got {assistant_turns!r}")
    turns = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
    if assistant_turns == "last":
        turns = turns[-1:]
    return [i for i in turns if messages[i].get("train") is not False]


def require_offsets(tokenizer, purpose: str) -> None:
    """Raise ValueError unless ``tokenizer`` gives character offsets (a fast, ``tokenizers``-backed
    tokenizer); ``purpose`` names what needs them."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{purpose}: these need the tokenizer's character offsets, and {type(tokenizer).__name__} (a Python "
                         "tokenizer) gives none; use a fast tokenizer (a folder with tokenizer.json)")


@contextlib.contextmanager
def _time_limit(seconds: float):
    """Raise ``TimeoutError`` inside the block once ``seconds`` have passed (SIGALRM). Unbounded off
    the main thread, or while another alarm is set (it is left as it was)."""
    if threading.current_thread() is not threading.main_thread() or signal.getitimer(signal.ITIMER_REAL)[0] > 0:
        yield
        return

    def expire(signum, frame):
        raise TimeoutError

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _apply_template(tokenizer, messages, turn, **kwargs):
    """``apply_chat_template`` with a template failure as a ValueError naming the message it reached, and
    a render that takes over ``RENDER_TIME_LIMIT_S`` (a template looping over and over) as one."""
    where = (f"the conversation up to message {turn}" if turn >= 0 else
             "the prompt before message 0 (the conversation opens with an assistant turn; many templates need a user "
             "or system message first: start the conversation with one, or drop the opening reply)")
    try:
        with _time_limit(RENDER_TIME_LIMIT_S):
            return tokenizer.apply_chat_template(messages, **kwargs)
    except TimeoutError:
        raise ValueError(f"the chat template took over {RENDER_TIME_LIMIT_S:g} s to render {where} (a loop in the "
                         "template?); fix the template or give another with --chat-template") from None
    except Exception as e:  # jinja2 raise_exception(...), a missing key, a template bug: many types
        missing = [i for i, m in enumerate(messages) if "content" not in m]
        hint = f" (message {missing[0]} has no 'content')" if missing else ""
        raise ValueError(f"the chat template failed on {where}: {e}{hint}") from None


def _render(tokenizer, messages, add_generation_prompt, tools, turn):
    return _apply_template(tokenizer, messages, turn, tools=tools, tokenize=False, add_generation_prompt=add_generation_prompt)


def chat_labels(messages: list[dict], tokenizer, assistant_turns: str = "all", tools=None,
                train_roles: tuple[int, ...] | None = None, system_into_user: bool = False) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of a conversation: labels are -100 except on the trained assistant turns.

    ``train_roles``: explicit message indices to supervise (overrides ``assistant_turns``; used for
    the conversational prompt/completion format). ``system_into_user``: see ``fold_system_into_user``.
    Raises ValueError when nothing is trained or a template rewrites earlier turns.
    """
    ids, labels, _, _, _ = chat_encoding(messages, tokenizer, assistant_turns, tools, train_roles,
                                         system_into_user=system_into_user)
    return ids, labels


def fold_system_into_user(messages: list[dict]) -> tuple[list[dict], list[int | None]]:
    """(messages, where each input message went): every system message's content is prepended to the
    next user message's content, joined by a blank line (``"\\n\\n"``, as FastChat and LLaMA-Factory do
    for templates without a system slot), and the system message removed; a system message with no
    user message after it stays. ``where[i]``: the index of input message i in the result, None for a
    folded system message."""
    out, where, pending = [], [], []
    for i, m in enumerate(messages):
        if m.get("role") == "system" and any(n.get("role") == "user" for n in messages[i + 1 :]):
            pending.append(m.get("content") or "")
            where.append(None)
            continue
        if m.get("role") == "user" and pending:
            m = m | {"content": "\n\n".join(t for t in [*pending, m.get("content") or ""] if t)}
            pending = []
        where.append(len(out))
        out.append(m)
    return out, where


def template_drops(messages: list[dict], text: str) -> dict[str, bool]:
    """Per role with a non-empty message: whether one of its messages' content (stripped) is not in
    ``text``, the template's render of ``messages``."""
    roles: dict[str, bool] = {}
    for m in messages:
        content = m.get("content")
        if isinstance(content, str) and content.strip():
            roles[m["role"]] = roles.get(m["role"], False) or content.strip() not in text
    return roles


def tally_drops(per_record=(), tallies=()) -> dict:
    """Per role (sorted): the records whose render dropped a message of it (``records``) of the records
    with one (``of``), over per-record ``template_drops`` dicts and earlier tallies."""
    total: dict[str, dict[str, int]] = {}
    for roles in per_record:
        for role, dropped in roles.items():
            count = total.setdefault(role, {"records": 0, "of": 0})
            count["records"] += bool(dropped)
            count["of"] += 1
    for tally in tallies:
        for role, c in tally.items():
            count = total.setdefault(role, {"records": 0, "of": 0})
            count["records"] += c["records"]
            count["of"] += c["of"]
    return dict(sorted(total.items()))


def dropped(tally: dict) -> dict:
    """The roles of a ``tally_drops`` tally with a dropped message in some record."""
    return {role: count for role, count in tally.items() if count["records"]}


def drop_warnings(drops: dict, owner: str, into: str = "the training input") -> list[str]:
    """One line per role that ``owner``'s chat template dropped (``drops``: role -> {"records", "of"},
    as ``goldfish.json``'s ``template_drops`` holds them); ``into``: what the messages are missing from."""
    lines = []
    for role, count in drops.items():
        what = "system prompts" if role == "system" else f"{role} messages"
        fix = "--chat-template FILE or --system-into-user" if role == "system" else "--chat-template FILE"
        lines.append(f"the chat template {owner} drops {role!r} messages: {count['records']} of {count['of']} records' {what} "
                     f"are not in {into}; use {fix}")
    return lines


def chat_encoding(messages: list[dict], tokenizer, assistant_turns: str = "all", tools=None,
                  train_roles: tuple[int, ...] | None = None, with_offsets: bool = False, system_into_user: bool = False):
    """``chat_labels`` plus the rendered text, each token's character offsets in it (for protected
    spans) and ``template_drops`` of the render: (input_ids, labels, text, offsets, drops). Without
    ``with_offsets``, offsets may be None (templates with generation tags are then not tokenized a
    second time)."""
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) and "role" in m for m in messages):
        raise ValueError("'messages' must be a non-empty list of {'role': ..., 'content': ...} dicts")
    if not tokenizer.chat_template:
        raise ValueError("the tokenizer has no chat template to render conversations with; give one with --chat-template "
                         "(chatml, llama3, vicuna_v1.1 or a Jinja file)")
    messages = normalize_messages(messages)  # content-part lists joined, ShareGPT role names mapped
    if system_into_user:
        messages, index = fold_system_into_user(messages)
        train_roles = None if train_roles is None else tuple(index[i] for i in train_roles)
    turns = list(train_roles) if train_roles is not None else trained_turns(messages, assistant_turns)
    if not turns:
        raise ValueError("the conversation has no assistant turn to train on")
    clean = [_clean(m) for m in messages]
    if has_generation_tags(tokenizer):
        ids, labels, text, offsets = _labels_from_generation_tags(clean, tokenizer, turns, tools, with_offsets)
    else:
        ids, labels, text, offsets = _labels_from_prefix_renders(clean, tokenizer, turns, tools)
    return ids, labels, text, offsets, template_drops(clean, text)


def _true_runs(flags) -> list[tuple[int, int]]:
    """(start, end) of each maximal run of truthy values."""
    runs, start = [], None
    for i, f in enumerate([*flags, False]):
        if f and start is None:
            start = i
        elif not f and start is not None:
            runs.append((start, i))
            start = None
    return runs


def supervised_runs(labels: list[int]) -> list[tuple[int, int]]:
    """(start, end) of each maximal run of supervised labels (one a trained assistant turn)."""
    return _true_runs([lab != IGNORE_INDEX for lab in labels])


def _labels_from_generation_tags(messages, tokenizer, turns, tools, with_offsets):
    enc = _apply_template(tokenizer, messages, len(messages) - 1, tools=tools, tokenize=True, return_dict=True,
                          return_assistant_tokens_mask=True)
    ids = list(enc["input_ids"])
    runs = _true_runs(list(enc["assistant_masks"]))
    assistant = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if len(runs) != len(assistant):
        raise ValueError(f"the template's {{% generation %}} spans mark {len(runs)} runs of tokens for {len(assistant)} "
                         "assistant messages (an empty reply?); cannot tell the turns apart")
    labels = [IGNORE_INDEX] * len(ids)
    for (start, end), index in zip(runs, assistant):
        if index in turns:
            labels[start:end] = ids[start:end]
    text = _render(tokenizer, messages, False, tools, len(messages) - 1)
    if not with_offsets:
        return ids, labels, text, None
    require_offsets(tokenizer, "protected spans")
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if list(enc["input_ids"]) != ids:
        raise ValueError("the chat template's tokens differ from its rendered text tokenized (a template that "
                         "tokenizes parts apart?); protected spans cannot be placed")
    return ids, labels, text, enc["offset_mapping"]


def _rewrites(turn: int) -> str:
    return (f"assistant turn {turn}: the chat template renders the conversation differently as it grows (it rewrites "
            "earlier turns, e.g. drops past reasoning), so the reply's tokens cannot be located; add "
            "{% generation %} tags to the template, train on the last turn only (--assistant-turns last), "
            "or split the conversation")


def _without_closing_eos(tokenizer, messages, upto: str, following: str | None, tools) -> str:
    """``upto`` without a final EOS that the template adds to close a whole conversation (Phi-3 does
    on every render that is not a generation prompt): an EOS that a render with a further message
    does not keep at that place. ``following``: such a render, or None to render one with a probe
    user message."""
    eos = tokenizer.eos_token or ""
    if not eos or not upto.endswith(eos):
        return upto
    if following is None:
        try:
            following = _apply_template(tokenizer, [*messages, {"role": "user", "content": "?"}], len(messages), tools=tools,
                                        tokenize=False)
        except ValueError:  # a template that refuses the probe: keep the EOS
            return upto
    return upto[: -len(eos)] if not following.startswith(upto) and following.startswith(upto[: -len(eos)]) else upto


def _labels_from_prefix_renders(messages, tokenizer, turns, tools):
    require_offsets(tokenizer, "assistant-only labels without {% generation %} tags")
    full = _render(tokenizer, messages, False, tools, len(messages) - 1)
    spans = []
    for i in turns:
        if messages[i]["role"] != "assistant":
            raise ValueError(f"message {i} is a {messages[i]['role']!r} message; only assistant turns can be trained")
        before = _render(tokenizer, messages[:i], True, tools, i - 1)
        upto = _render(tokenizer, messages[: i + 1], False, tools, i)
        upto = _without_closing_eos(tokenizer, messages[: i + 1], upto, full if i + 1 < len(messages) else None, tools)
        if not upto.startswith(before) or not full.startswith(upto):
            raise ValueError(_rewrites(i))
        span = upto[len(before):].rstrip()
        content = messages[i].get("content")
        if isinstance(content, str) and content.strip() and content.strip() not in span:
            raise ValueError(f"assistant turn {i}: its content does not appear in the text the template renders for it")
        spans.append((len(before), len(before) + len(span), i))
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
    labels = [IGNORE_INDEX] * len(ids)
    for start, end, turn in spans:
        hit = [t for t, (a, b) in enumerate(offsets) if a < end and b > start and b > a]
        if not hit:
            raise ValueError(f"assistant turn {turn}: no token covers its reply")
        lo, hi = offsets[hit[0]][0], offsets[hit[-1]][1]
        if full[lo:start].strip() or full[end:hi].strip():
            raise ValueError(f"assistant turn {turn}: a token spans the reply and the template text around it "
                             f"({full[lo:hi]!r}); the reply's first or last token cannot be supervised alone")
        for t in hit:
            labels[t] = ids[t]
    return ids, labels, full, offsets
