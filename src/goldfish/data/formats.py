"""Record formats as users have them, each turned into one of the three record shapes goldfish
tokenizes (TRL's ``text``, ``messages``, ``prompt``/``completion``), so labels, protected spans, the
cache and the audit have one path:

    sharegpt    ``{"conversations": [{"from": ROLE, "value": TEXT}, ...], "system": TEXT}`` (FastChat,
                LLaMA-Factory, axolotl): a ``system`` field or a first system turn becomes the system message
    alpaca      ``{"instruction", "input", "output", "system", "history": [[query, reply], ...]}``: the
                history's turns, then ``instruction`` and ``input`` (joined by a blank line) as the user
                turn and ``output`` as the assistant turn
    messages    TRL's, where a message's ``content`` may also be a list of content parts
                (``[{"type": "text", "text": ...}]``, OpenAI style: the text parts are joined)
    prompt_completion, text   TRL's, unchanged

Roles (``ROLES``): ``human``/``user`` -> user; ``gpt``/``assistant``/``model``/``chatgpt``/``bing``/
``bard`` -> assistant (FastChat's names); ``system``; the tool roles as LLaMA-Factory maps them:
``function_call`` (the assistant calling a tool: an assistant turn, trained) and ``observation`` /
``tool`` (the tool's answer: a ``tool`` message). They apply in ``messages`` records too. Other
record keys (``goldfish``, ``goldfish_k``, ``protect``, ``tools``, ``id``) carry over.
"""

from __future__ import annotations

FORMATS = ("text", "messages", "prompt_completion", "sharegpt", "alpaca")
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "model": "assistant",
         "chatgpt": "assistant", "bing": "assistant", "bard": "assistant", "system": "system",
         "function_call": "assistant", "observation": "tool", "tool": "tool"}
KEEP = ("goldfish", "goldfish_k", "protect", "tools", "id")


def detect_format(columns, text_field: str = "text") -> str:
    """The format of records with these columns: messages > sharegpt > alpaca > prompt/completion > text."""
    columns = set(columns)
    if "messages" in columns:
        return "messages"
    if "conversations" in columns:
        return "sharegpt"
    if {"instruction", "output"} <= columns:
        return "alpaca"
    if {"prompt", "completion"} <= columns:
        return "prompt_completion"
    if text_field in columns:
        return "text"
    raise ValueError(
        f"records have no {text_field!r}, 'messages', 'conversations' (ShareGPT), 'instruction'/'output' (Alpaca) or "
        f"'prompt'/'completion' field (have {sorted(columns)}); use --text-field to name a text column, or --format")


def _role(role, found: list) -> str:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r} (roles in this record: {', '.join(map(repr, dict.fromkeys(found)))}; "
                         f"accepted: {', '.join(ROLES)})")
    return ROLES[role]


def _text(content, where: str) -> str:
    """A message content as one string: a string, or the joined text of a content-part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        other = sorted({str(p.get("type")) for p in content if p.get("type") != "text"})
        if other:
            raise ValueError(f"{where} has {', '.join(other)} content parts; goldfish trains on text only")
        texts = [p.get("text") or "" for p in content]
        wrong = next((j for j, t in enumerate(texts) if not isinstance(t, str)), None)
        if wrong is not None:
            raise ValueError(f"{where}: content part {wrong} has a 'text' that is not a string ({texts[wrong]!r})")
        return "".join(texts)
    raise ValueError(f"{where}: 'content' must be a string or a list of content parts, got {type(content).__name__}")


def _train_flag(value, where: str):
    """A message's ``train`` flag: absent (None) or a JSON boolean; ValueError otherwise (the string
    "false" or 0 must not train the turn silently)."""
    if value is not None and not isinstance(value, bool):
        raise ValueError(f"{where}: 'train' must be true or false (a JSON boolean), got {value!r}")
    return value


def normalize_messages(messages: list) -> list[dict]:
    """``messages`` with content-part lists joined into strings and roles mapped by ``ROLES``;
    ValueError for a ``train`` flag that is not a JSON boolean."""
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise ValueError("'messages' must be a list of {'role': ..., 'content': ...} dicts")
    found = [m.get("role") for m in messages]
    out = []
    for i, m in enumerate(messages):
        m = {k: v for k, v in m.items() if v is not None}
        if "content" in m:
            m["content"] = _text(m["content"], f"message {i}")
        _train_flag(m.get("train"), f"message {i}")
        out.append(m | {"role": _role(m.get("role"), found)})
    return out


def _sharegpt(record: dict) -> list[dict]:
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns or not all(isinstance(t, dict) for t in turns):
        raise ValueError("'conversations' must be a non-empty list of {'from': ..., 'value': ...} dicts")
    found = [t.get("from") for t in turns]
    messages = [{"role": "system", "content": record["system"]}] if record.get("system") else []
    for i, t in enumerate(turns):
        if t.get("value") is None:
            raise ValueError(f"conversations[{i}] has no 'value'")
        message = {"role": _role(t.get("from"), found), "content": _text(t["value"], f"conversations[{i}]")}
        if _train_flag(t.get("train"), f"conversations[{i}]") is not None:
            message["train"] = t["train"]
        messages.append(message)
    return messages


def _alpaca(record: dict) -> list[dict]:
    messages = [{"role": "system", "content": record["system"]}] if record.get("system") else []
    for i, pair in enumerate(record.get("history") or []):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise ValueError(f"history[{i}] must be a [query, reply] pair of strings")
        messages += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    instruction, extra, output = record.get("instruction"), record.get("input"), record.get("output")
    if not isinstance(instruction, str) or not isinstance(output, str) or not isinstance(extra or "", str):
        raise ValueError("Alpaca records need 'instruction' and 'output' strings ('input' optional)")
    prompt = f"{instruction}\n\n{extra}" if extra else instruction
    return messages + [{"role": "user", "content": prompt}, {"role": "assistant", "content": output}]


def to_record(record: dict, fmt: str) -> dict:
    """``record`` (in format ``fmt``, see module docstring) as a text, messages or prompt/completion record."""
    kept = {k: record[k] for k in KEEP if record.get(k) is not None}
    if fmt == "sharegpt":
        return kept | {"messages": _sharegpt(record)}
    if fmt == "alpaca":
        return kept | {"messages": _alpaca(record)}
    if fmt == "messages":
        return {k: v for k, v in record.items() if v is not None} | {"messages": normalize_messages(record.get("messages"))}
    if fmt == "prompt_completion" and isinstance(record.get("prompt"), list):
        return {k: v for k, v in record.items() if v is not None} | {
            "prompt": normalize_messages(record["prompt"]), "completion": normalize_messages(record.get("completion"))}
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return {k: v for k, v in record.items() if v is not None}
