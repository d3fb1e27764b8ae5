"""Run a memorization audit: extraction on documents (+ membership inference with non-members) for
one or more models, sharded across processes under ``accelerate launch`` / ``torchrun``."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from goldfish.audit.chat import chat_turns, secret_rates, training_values
from goldfish.audit.extraction import generate_suffixes, max_context, split_at_offset, split_document, token_logprobs
from goldfish.audit.metrics import extraction_metrics, mia_scores, roc_summary
from goldfish.models import check_model_folder, load_model
from goldfish.secrets import load_secrets

MIA_SCORES = ("loss", "zlib", "min_k", "min_k_pp")


@dataclass
class AuditConfig:
    """Settings of ``goldfish audit`` (CLI flags have the same names)."""

    models: list[str]
    data: str
    out: str | None = None
    names: list[str] | None = None
    suffix_len: int = 50
    prefix_len: int | None = None
    offsets: list[int] | None = None  # prefixes start at these token offsets (needs prefix_len)
    batch_size: int = 16
    non_members: str | None = None
    reference_model: str | None = None
    beams: int = 1
    stop_at_eos: bool = False
    device: str | None = None
    dtype: str = "auto"
    text_field: str = "text"
    assistant_turns: str = "all"
    min_new_tokens: int = 0  # chats: decode at least this many tokens a turn (the secret scan reads them)
    secrets: list[str] = field(default_factory=list)  # "builtin" or files (see goldfish.secrets)
    max_documents: int | None = None
    progress: bool = True
    extra: dict = field(default_factory=dict)  # settings of the caller, copied into the summary


def _validate(cfg: AuditConfig) -> None:
    if not cfg.models:
        raise ValueError("give at least one --model DIR")
    for m in [*cfg.models, *([cfg.reference_model] if cfg.reference_model else [])]:
        check_model_folder(m)
    if cfg.suffix_len < 1:
        raise ValueError(f"--suffix-len must be >= 1, got {cfg.suffix_len}")
    if cfg.prefix_len is not None and cfg.prefix_len < 1:
        raise ValueError(f"--prefix-len must be >= 1, got {cfg.prefix_len}")
    if cfg.offsets is not None and (cfg.prefix_len is None or any(o < 0 for o in cfg.offsets) or not cfg.offsets):
        raise ValueError("--offsets needs --prefix-len and offsets >= 0 (e.g. --offsets 0,16 --prefix-len 32)")
    if cfg.batch_size < 1 or cfg.beams < 1:
        raise ValueError("--batch-size and --beam must be >= 1")
    if cfg.names is not None and len(cfg.names) != len(cfg.models):
        raise ValueError(f"{len(cfg.names)} --name given for {len(cfg.models)} --model")
    load_secrets(cfg.secrets)  # a bad file or regex fails before any model loads
    if cfg.out:
        from goldfish.audit.report import check_out_folder

        check_out_folder(cfg.out)


def _documents(source: str, text_field: str, limit: int | None) -> tuple[list[dict], str]:
    """The documents of a source and their kind: "text" (extraction of suffixes) or "chat"
    (messages or prompt/completion records: extraction of assistant turns)."""
    from goldfish.data import document_format, read_documents

    docs = read_documents(source, text_field)
    kind = "text" if document_format(set().union(*docs), text_field) == "text" else "chat"
    if kind == "text":
        for i, d in enumerate(docs):
            if not isinstance(d.get(text_field), str):
                raise ValueError(f"{source}: record {i}: no {text_field!r} string (got {d.get(text_field)!r}); every record "
                                 "of a text file needs one (--text-field names the field)")
        docs = [{"id": str(d.get("id", i)), "text": d[text_field]} for i, d in enumerate(docs)]
    return (docs[:limit] if limit else docs), kind


def _model_names(cfg: AuditConfig) -> list[str]:
    if cfg.names:
        return list(cfg.names)
    names = [Path(m).name or str(m) for m in cfg.models]
    return [n if names.count(n) == 1 else f"{n}#{i}" for i, n in enumerate(names)]


def _shard(items: list, state) -> list:
    return items[state.process_index :: state.num_processes] if state is not None else items


def _gather(rows: list, state) -> list:
    if state is None or state.num_processes == 1:
        return rows
    from accelerate.utils import gather_object

    return gather_object(rows)


def _distributed_state():
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import PartialState

    return PartialState(cpu=os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true"))


def _text_rows(docs: list[dict], tokenizer, cfg: AuditConfig, context: int, extract: bool) -> tuple[list[dict], int]:
    rows, skipped = [], 0
    for doc in docs:
        ids = tokenizer(doc["text"], add_special_tokens=False)["input_ids"]
        if len(ids) < 2:
            skipped += 1
            continue
        score = ids[-context:]  # membership scores read the whole document
        base = {"_score": score, "_scored": len(score) - 1, "_text": doc["text"]}
        if not extract:
            rows.append({"id": doc["id"], "_prefix": ids, "_suffix": [], **base})
            continue
        for offset in cfg.offsets if cfg.offsets is not None else [None]:
            if offset is None:
                split = split_document(ids, cfg.prefix_len, cfg.suffix_len, context)
                start = len(ids) - cfg.suffix_len - len(split[0]) if split else 0
            else:
                split, start = split_at_offset(ids, offset, cfg.prefix_len, cfg.suffix_len, context), offset
            if split is None:
                skipped += 1
                continue
            row_id = doc["id"] if offset is None else f"{doc['id']}@{offset}"
            rows.append({"id": row_id, "prefix_start": start, "prefix_tokens": len(split[0]), "_prefix": split[0], "_suffix": split[1],
                         **({"offset": offset} if offset is not None else {}), **base})
    return rows, skipped


def _chat_rows(docs: list[dict], tokenizer, cfg: AuditConfig, context: int, extract: bool, source: str) -> tuple[list[dict], int]:
    try:
        rows, skipped = chat_turns(docs, tokenizer, context, cfg.text_field, cfg.assistant_turns)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None
    for r in rows:  # membership scores read the reply's tokens only, after their prompt
        r.update(prefix_tokens=len(r["_prefix"]), _score=r["_prefix"] + r["_suffix"], _scored=len(r["_suffix"]),
                 _text=tokenizer.decode(r["_suffix"], skip_special_tokens=True))
    return rows, skipped


def audit_model(model, tokenizer, name: str, docs: list[dict], cfg: AuditConfig, member: bool, extract: bool,
                kind: str = "text") -> tuple[list[dict], int]:
    """Rows (one a document, or a trained assistant turn for chat) for one model, and how many were skipped."""
    context = max_context(model)
    if kind == "text":
        if extract and cfg.suffix_len >= context:
            raise ValueError(f"--suffix-len {cfg.suffix_len}: the model {name!r} reads at most {context} tokens, prefix and suffix "
                             f"together; give a --suffix-len below {context}")
        rows, skipped = _text_rows(docs, tokenizer, cfg, context, extract)
    else:
        rows, skipped = _chat_rows(docs, tokenizer, cfg, context, extract, cfg.data if member else cfg.non_members)
    for r in rows:
        r.update(model=name, member=member)
    tag = "members" if member else "non-members"
    if extract and rows:
        lengths = [max(len(r["_suffix"]), cfg.min_new_tokens if kind == "chat" else 0) for r in rows]
        generated = generate_suffixes(model, tokenizer, [r["_prefix"] for r in rows], lengths,
                                      cfg.batch_size, cfg.beams, cfg.stop_at_eos, cfg.progress, desc=f"{name}: extract {tag}")
        for r, decoded in zip(rows, generated):
            gen = decoded[: len(r["_suffix"])]
            gen_text, true_text = tokenizer.decode(gen), tokenizer.decode(r["_suffix"])
            r.update(generated=gen_text, true_suffix=true_text, prefix_tail=tokenizer.decode(r["_prefix"][-40:]),
                     generated_ids=gen, true_ids=r["_suffix"], **extraction_metrics(gen, r["_suffix"], gen_text, true_text))
            if kind == "chat":  # the reply as a user reads it, up to its end-of-turn token (for the secret scan)
                eot = r["_suffix"][-1]
                reply = decoded[: decoded.index(eot) + 1] if eot in decoded else decoded
                r.update(generated_text=tokenizer.decode(reply, skip_special_tokens=True), true_text=r["_text"])
    if cfg.non_members is not None and rows:
        scored = token_logprobs(model, [r["_score"] for r in rows], max(1, cfg.batch_size // 2), cfg.progress, desc=f"{name}: score {tag}")
        for r, (lp, mu, sigma) in zip(rows, scored):
            n = r["_scored"]
            r.update(mia_scores(lp[-n:], mu[-n:], sigma[-n:], r["_text"]))
    for r in rows:
        for key in ("_prefix", "_suffix", "_text", "_score", "_scored"):
            r.pop(key)
    return rows, skipped


def _secret_summary(rows: list[dict], secrets) -> dict:
    members = [r for r in rows if r["member"] and "generated_text" in r]
    non = [r for r in rows if not r["member"] and "generated_text" in r]
    known = training_values(members, secrets)
    out = secret_rates(members, secrets, known)
    for name, rates in secret_rates(non, secrets, known).items():
        out[name]["non_members"] = rates
    for r in rows:  # which training secrets each generation holds, for the report
        if "generated_text" in r:
            r["leaked"] = sorted({v for vs in known.values() for v in vs if v in r["generated_text"]})
    return out


def _extraction_summary(members: list[dict]) -> dict:
    runs = [r["longest_run"] for r in members]
    rouge = [r["rouge_l"] for r in members if r["rouge_l"] is not None]
    return {
        "documents": len(members),
        "exact_match_rate": float(np.mean([r["exact_match"] for r in members])),
        "exact_match_count": int(sum(r["exact_match"] for r in members)),
        "token_match_rate": float(np.mean([r["token_match_rate"] for r in members])),
        "rouge_l_mean": float(np.mean(rouge)) if rouge else None,
        "rouge_l_undefined": len(members) - len(rouge),  # true text without any [a-z0-9] word
        "rouge_l_tokens_mean": float(np.mean([r["rouge_l_tokens"] for r in members])),
        "first_divergence_mean": float(np.mean([r["first_divergence"] for r in members])),
        "longest_run_mean": float(np.mean(runs)),
        "longest_run_max": int(max(runs)),
    }


def summarize(rows: list[dict], skipped: int, reference: bool) -> dict:
    members = [r for r in rows if r["member"]]
    s = {"documents": len(members), "skipped_too_short": skipped}
    if members and "exact_match" in members[0]:
        s.update(_extraction_summary(members))
        s["prefix_mid_document"] = sum(r.get("prefix_start", 0) > 0 for r in members)
        offsets = sorted({r["offset"] for r in members if "offset" in r})
        if offsets:
            s["by_offset"] = {str(o): _extraction_summary([r for r in members if r.get("offset") == o]) for o in offsets}
    non = [r for r in rows if not r["member"]]
    if non and members:
        first = min((r["offset"] for r in members if "offset" in r), default=None)
        members = [r for r in members if r.get("offset") == first]  # one membership score per document
        names = MIA_SCORES + (("reference",) if reference else ())
        s["mia"] = {k: roc_summary([r[k] for r in members], [r[k] for r in non]) for k in names}
        s["mia"]["non_members"] = len(non)
    return s


def run_audit(cfg: AuditConfig) -> dict:
    """Audit every model on the documents; write the report to ``cfg.out`` (rank 0) if given.

    Returns {"models": {name: summary}, "rows": [...], "settings": ..., "wall_time_s": ...}.
    """
    _validate(cfg)
    start = time.time()
    docs, kind = _documents(cfg.data, cfg.text_field, cfg.max_documents)
    non_members, non_kind = _documents(cfg.non_members, cfg.text_field, None) if cfg.non_members else ([], kind)
    if non_kind != kind:
        raise ValueError(f"--non-members {cfg.non_members} holds {non_kind} records but --data {cfg.data} holds {kind} records")
    secrets = load_secrets(cfg.secrets)
    if secrets and kind != "chat":
        raise ValueError("--secrets scans assistant replies: give chat data (messages or prompt/completion records)")
    state = _distributed_state()
    my_docs, my_non = _shard(docs, state), _shard(non_members, state)
    reference_nll = {}
    if cfg.reference_model:
        ref, ref_tok = load_model(cfg.reference_model, cfg.device, cfg.dtype)
        for member, group in ((True, my_docs), (False, my_non)):
            rows, _ = audit_model(ref, ref_tok, "reference", group, cfg, member, extract=False, kind=kind)
            reference_nll.update({(member, r["id"]): r["nll"] for r in rows})
        del ref
    all_rows, summaries = [], {}
    for path, name in zip(cfg.models, _model_names(cfg)):
        model, tokenizer = load_model(path, cfg.device, cfg.dtype)
        rows, skipped = audit_model(model, tokenizer, name, my_docs, cfg, True, extract=True, kind=kind)
        non_rows, _ = (audit_model(model, tokenizer, name, my_non, cfg, False, extract=bool(secrets), kind=kind)
                       if my_non else ([], 0))
        rows += non_rows
        for r in rows:
            if reference_nll and (r["member"], r["id"]) in reference_nll:
                r["reference"] = reference_nll[(r["member"], r["id"])] - r["nll"]  # higher = member
        rows = _gather(rows, state)
        skipped = sum(_gather([skipped], state))
        summaries[name] = summarize(rows, skipped, bool(reference_nll))
        if secrets:
            summaries[name]["secrets"] = _secret_summary(rows, secrets)
        all_rows += rows
        del model
    if not any(s["documents"] for s in summaries.values()):
        if kind == "chat":
            raise ValueError(f"{cfg.data}: no assistant turn fits the model's context")
        raise ValueError(f"no document of {cfg.data} is long enough for prefix + suffix ({cfg.prefix_len or 1} + {cfg.suffix_len} tokens)")
    result = {
        "models": summaries, "rows": all_rows, "wall_time_s": round(time.time() - start, 2),
        "settings": {k: v for k, v in asdict(cfg).items() if k not in ("extra", "progress")} | {"kind": kind} | cfg.extra,
    }
    if cfg.out and (state is None or state.is_main_process):
        from goldfish.audit.report import write_report

        write_report(result, cfg.out)
    return result
