"""Run a memorization audit: extraction on documents (+ membership inference with non-members) for
one or more models, sharded across processes under ``accelerate launch`` / ``torchrun``."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Literal

from goldfish.audit.engines import ENGINES, check_engine, open_engine
from goldfish.audit.engines.hf import HFEngine
from goldfish.audit.metrics import degeneration_metrics, extraction_metrics, longest_run, mia_scores, reproduced_runs
from goldfish.audit.overlap import OVERLAP_FLAG, overlap_fields
from goldfish.audit.probes import Probe, chat_probes, text_probes
from goldfish.audit.sampling import DecodingRule
from goldfish.audit.summary import (
    ModelSummary,
    compare_to_baseline,
    leaked_secrets,
    sampled_secret_summary,
    secret_summary,
    summarize,
)
from goldfish.arguments import field_like
from goldfish.data.prepare import DataSettings
from goldfish.distributed import cpu_requested, world_size
from goldfish.models import ModelsArguments, load_model, resolve_models
from goldfish.secrets import load_secrets


logger = logging.getLogger("goldfish")


def int_list(text: str) -> list[int]:
    """Comma-separated integers ("0,16,32")."""
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _secret_help(what: str) -> str:
    return (f"{what}: 'builtin' (emails, phones, URLs, IPv4, cards, API keys) or a file with one literal or re:REGEX a line; "
            "repeatable")


@dataclass
class AuditConfig(ModelsArguments):
    """Settings of ``goldfish audit`` (the CLI flags have the same names): the models' group and the audit's own."""

    data: str | None = field(default=None, metadata={
        "help": "documents (text) or chats (messages, prompt/completion) to test: a file, folder, save_to_disk dataset or "
                "embedded:PART"})
    out: str | None = field(default=None, metadata={"help": "report folder"})
    suffix_len: int = field(default=50, metadata={"help": "text: tokens to extract (the document's last N)"})
    prefix_len: int | None = field(default=None, metadata={"help": "text: prompt tokens (None: all before the suffix)"})
    offsets: list[int] | None = field(default=None, metadata={
        "argparse": {"type": int_list, "nargs": None},
        "help": "text: comma-separated token offsets where prefixes start (e.g. 0,16,32; needs --prefix-len): metrics per "
                "offset"})
    prefix_lens: list[int] | None = field(default=None, metadata={
        "argparse": {"type": int_list, "nargs": None},
        "help": "text: comma-separated prompt lengths (e.g. 16,32,64), the suffix fixed (the document's last --suffix-len "
                "tokens): metrics per prefix length"})
    batch_size: int = field(default=16, metadata={"help": "sequences a batch"})
    non_members: str | None = field(default=None, metadata={
        "help": "documents or chats the model never saw: runs membership inference"})
    utility_data: str | None = field(default=None, metadata={
        "help": "documents or chats to measure the held-out loss on (text that should be kept; default: --non-members)"})
    reference_model: str | None = field(default=None, metadata={"help": "reference model for the loss-difference MIA score"})
    beams: int = field(default=1, metadata={"help": "beam search width (1 = greedy)"})
    stop_at_eos: bool = field(default=False, metadata={"help": "stop a generation at EOS"})
    samples: int = field(default=0, metadata={
        "help": "sampled continuations per prompt besides greedy, under --temperature / --top-k / --top-p (0: none)"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature (> 0), also of the exact extraction probability"})
    top_k: int | None = field(default=None, metadata={"help": "sampling: keep the K most likely tokens (None: off)"})
    top_p: float = field(default=1.0, metadata={"help": "sampling: nucleus, keep the most likely tokens of mass P (1: off)"})
    sample_seed: int = field(default=0, metadata={"help": "seed of the samples (with the prompt, it fixes each continuation)"})
    keep_samples: bool = field(default=False, metadata={"help": "results.jsonl keeps the text of every sample (samples_text)"})
    extraction_probability: bool = field(default=True, metadata={
        "help": "compute each document's exact extraction probability under the decoding rule (log10_p_exact)"})
    engine: Literal[ENGINES] = field(default="hf", metadata={
        "help": "where the models decode: hf (in-process), openai (a running OpenAI-compatible server: --endpoint) or vllm "
                "(goldfish starts and stops `vllm serve` from --vllm-python)"})
    endpoint: str | None = field(default=None, metadata={
        "help": "--engine openai: the server's base URL, with or without /v1 (e.g. http://127.0.0.1:8000/v1); it must serve "
                "the --model folder"})
    served_model: str | None = field(default=None, metadata={
        "help": "--engine openai: the model name the server serves it as (None: the only one it lists)"})
    api_key_env: str | None = field(default=None, metadata={
        "help": "--engine openai: the environment variable that holds the server's API key (None: no key)"})
    vllm_python: str | None = field(default=None, metadata={
        "help": "--engine vllm: the python of a virtualenv with vLLM (e.g. .engine-venv/bin/python, `make engine-venv`)"})
    text_field: str = field(default="text", metadata={"help": "the field that holds plain text"})
    assistant_turns: Literal["all", "last"] = field(default="all", metadata={"help": "chats: which assistant turns to test"})
    system_into_user: bool = field_like(DataSettings, "system_into_user")
    min_new_tokens: int = field(default=0, metadata={
        "help": "chats: decode at least N tokens a turn, up to its end-of-turn token (the secret scan reads them; the "
                "metrics read as many as the true reply has)"})
    secrets: list[str] = field(default_factory=list, metadata={"repeatable": True, "help": _secret_help("chats: scan the replies")})
    max_documents: int | None = field(default=None, metadata={"help": "audit only the first N documents"})
    allow_overlap: bool = field(default=False, metadata={
        "help": "audit even when --data and --non-members share records (membership inference and the held-out loss "
                "then read members as non-members)"})
    drop_overlap: bool = field(default=False, metadata={
        "help": "leave out the --non-members records that share their content with a --data record (counted in the log "
                "and summary.json's non_members_dropped) instead of refusing them"})
    progress: bool = field(default=True, metadata={"help": "progress bars"})
    ddp_timeout: float = field(default=1800, metadata={
        "help": "under torchrun / accelerate: seconds a rank waits in a collective for its peers before it stops with "
                "an error (as goldfish train's --ddp-timeout)"})


def _validate(cfg: AuditConfig) -> tuple[dict[str, str], str, list]:
    """Check every setting before any model loads; returns ``resolve_models``'s ({name: folder},
    baseline) and the secrets to scan for."""
    models, baseline = resolve_models(cfg, reference_model=cfg.reference_model)
    if cfg.data is None:
        raise ValueError("give the documents or chats to audit: --data FILE|DIR|embedded:PART")
    if cfg.suffix_len < 1:
        raise ValueError(f"--suffix-len must be >= 1, got {cfg.suffix_len}")
    if cfg.prefix_len is not None and cfg.prefix_len < 1:
        raise ValueError(f"--prefix-len must be >= 1, got {cfg.prefix_len}")
    if cfg.offsets is not None and (cfg.prefix_len is None or any(o < 0 for o in cfg.offsets) or not cfg.offsets):
        raise ValueError("--offsets needs --prefix-len and offsets >= 0 (e.g. --offsets 0,16 --prefix-len 32)")
    if cfg.prefix_lens is not None and (not cfg.prefix_lens or min(cfg.prefix_lens) < 1 or cfg.prefix_len is not None
                                        or cfg.offsets is not None):
        raise ValueError(f"--prefix-lens needs lengths >= 1 (e.g. --prefix-lens 16,32,64) and replaces --prefix-len and "
                         f"--offsets (got --prefix-lens {cfg.prefix_lens}, --prefix-len {cfg.prefix_len}, --offsets {cfg.offsets})")
    if cfg.max_documents is not None and cfg.max_documents < 1:
        raise ValueError(f"--max-documents must be >= 1, got {cfg.max_documents} (leave it out to audit every document)")
    if cfg.batch_size < 1 or cfg.beams < 1:
        raise ValueError("--batch-size and --beam must be >= 1")
    if not cfg.ddp_timeout > 0:
        raise ValueError(f"--ddp-timeout must be > 0 seconds, got {cfg.ddp_timeout}")
    if cfg.samples < 0 or not cfg.temperature > 0 or not 0 < cfg.top_p <= 1 or (cfg.top_k is not None and cfg.top_k < 1):
        raise ValueError(f"sampling needs --samples >= 0, --temperature > 0, 0 < --top-p <= 1 and --top-k >= 1 (got --samples "
                         f"{cfg.samples}, --temperature {cfg.temperature}, --top-p {cfg.top_p}, --top-k {cfg.top_k})")
    if cfg.allow_overlap and cfg.drop_overlap:
        raise ValueError("--allow-overlap keeps the shared records and --drop-overlap leaves them out: give one of them")
    if cfg.keep_samples and not cfg.samples:
        raise ValueError("--keep-samples keeps the sampled texts: give --samples N too")
    check_engine(cfg)
    secrets = load_secrets(cfg.secrets)  # a bad file or regex fails before any model loads
    if cfg.out:
        from goldfish.audit.report import AUDIT_FILES
        from goldfish.cache import check_out_folder

        check_out_folder(cfg.out, AUDIT_FILES, "an audit")
    return models, baseline, secrets


def _documents(source: str, text_field: str, limit: int | None) -> tuple[list[dict], str]:
    """The documents of a source and their kind: "text" (extraction of suffixes) or "chat"
    (messages or prompt/completion records: extraction of assistant turns)."""
    from goldfish.data import document_format, read_documents

    from goldfish.data.sources import resolve_source

    if resolve_source(source).split is not None:
        logger.info("audit data: %s", resolve_source(source).describe())
    docs = read_documents(source, text_field)
    kind = "text" if document_format(set().union(*docs), text_field) == "text" else "chat"
    if kind == "text":
        for i, d in enumerate(docs):
            if not isinstance(d.get(text_field), str):
                raise ValueError(f"{source}: record {i}: no {text_field!r} string (got {d.get(text_field)!r}); every record "
                                 "of a text file needs one (--text-field names the field)")
        docs = [{"id": str(d.get("id", i)), "text": d[text_field]} for i, d in enumerate(docs)]
    return (docs[:limit] if limit else docs), kind


def _shared(docs: list[dict], non_members: list[dict]) -> list[tuple[int, int]]:
    """(i, j) for each --non-members record j with the content of --data record i (ids aside)."""
    def content(d):
        return json.dumps({k: v for k, v in d.items() if k != "id"}, sort_keys=True, default=str)

    seen = {content(d): i for i, d in enumerate(docs)}
    return [(seen[c], j) for j, d in enumerate(non_members) if (c := content(d)) in seen]


def _disjoint_non_members(docs: list[dict], non_members: list[dict], cfg: AuditConfig) -> tuple[list[dict], int]:
    """The --non-members records and how many were dropped: a ValueError when some share the content
    of a --data record, unless --drop-overlap (they are left out) or --allow-overlap (kept)."""
    shared = [] if cfg.allow_overlap else _shared(docs, non_members)
    if shared and cfg.drop_overlap:
        logger.warning("--drop-overlap: left out %d of %d --non-members records that share their content with a --data record",
                       len(shared), len(non_members))
        drop = {j for _, j in shared}
        return [d for j, d in enumerate(non_members) if j not in drop], len(shared)
    if shared:
        (i, j), n = shared[0], len(shared)
        raise ValueError(f"--data {cfg.data} and --non-members {cfg.non_members} share {n} record(s) (the first: record {i} "
                         f"and record {j}); membership inference and the held-out loss need records the model never saw: "
                         "give disjoint data (e.g. PATH:train and PATH:test), --drop-overlap to leave those non-members out, "
                         "or --allow-overlap")
    return non_members, 0


def _shard(items: list, state) -> list:
    return items[state.process_index :: state.num_processes] if state is not None else items


def _gather(rows: list, state) -> list:
    if state is None or state.num_processes == 1:
        return rows
    from accelerate.utils import gather_object

    return gather_object(rows)


def _distributed_state(timeout_s: float):
    from datetime import timedelta

    if world_size() <= 1:
        return None
    from accelerate import PartialState

    return PartialState(cpu=cpu_requested(), timeout=timedelta(seconds=timeout_s))


def _probes(docs: list[dict], tokenizer, cfg: AuditConfig, kind: str, member: bool, context: int, extract: bool):
    """(probes, skipped, template drops: ``goldfish.data.chat.tally_drops``, {} for text)."""
    if kind == "text":
        return *text_probes(docs, tokenizer, member, context, cfg.prefix_len, cfg.suffix_len, cfg.offsets, extract,
                            cfg.prefix_lens), {}
    try:
        return chat_probes(docs, tokenizer, member, context, cfg.text_field, cfg.assistant_turns, cfg.system_into_user)
    except ValueError as e:
        raise ValueError(f"{cfg.data if member else cfg.non_members}: {e}") from None


def _template_drops(tallies: list[dict], model: str, state) -> dict:
    """The roles the model's chat template dropped from the audit's prompts (``summary.json``'s
    ``models.<name>.template_drops``), each said once in a warning (on the main process)."""
    from goldfish.data.chat import drop_warnings, dropped, tally_drops

    drops = dropped(tally_drops(tallies=tallies))
    if state is None or state.is_main_process:
        for line in drop_warnings(drops, f"of {model}", "the audit's prompts"):
            logger.warning(line)
    return drops


def _document_id(row: dict) -> str:
    """The id of a row's document: its own, less ``@OFFSET`` / ``@pLEN`` under --offsets / --prefix-lens."""
    return row["id"].rsplit("@", 1)[0] if "offset" in row or "prefix_len" in row else row["id"]


def _reply(decoded: list[int], p: Probe) -> list[int]:
    """A chat generation as a user reads it: up to its end-of-turn token (the true reply's last)."""
    eot = p.suffix[-1]
    return decoded[: decoded.index(eot) + 1] if eot in decoded else decoded


def _greedy_fields(tokenizer, p: Probe, decoded: list[int], kind: str) -> dict:
    """A row's fields of its greedy generation ``decoded``: texts, ids, extraction and degeneration metrics,
    the reproduced runs as character spans; for chats also the whole reply (the secret scan's)."""
    if kind == "chat":  # the reply as a chat UI shows it: up to the model's own end-of-turn token
        decoded = _reply(decoded, p)
    gen = decoded[: len(p.suffix)]  # the metrics read as many tokens as the true reply has, at most
    gen_text, true_text = tokenizer.decode(gen), tokenizer.decode(p.suffix)
    fields = dict(generated=gen_text, true_suffix=true_text, prefix_tail=tokenizer.decode(p.prefix[-40:]),
                  generated_ids=gen, prefix_ids=p.prefix, true_ids=p.suffix,
                  **extraction_metrics(gen, p.suffix, gen_text, true_text),
                  **{f"generated_{k}": v for k, v in degeneration_metrics(gen).items()},
                  **{f"true_{k}": v for k, v in degeneration_metrics(p.suffix).items()})
    runs = reproduced_runs(gen, p.suffix)
    fields["reproduced"] = {"generated": char_spans(tokenizer, gen, runs[0]), "true": char_spans(tokenizer, p.suffix, runs[1])}
    if kind == "chat":  # the whole reply, up to --min-new-tokens of it (for the secret scan)
        fields.update(generated_text=tokenizer.decode(decoded, skip_special_tokens=True), true_text=p.text)
    return fields


def _sample_fields(tokenizer, p: Probe, decoded: list[list[int]], cfg: AuditConfig, kind: str) -> dict:
    """A row's fields of its sampled continuations ``decoded``: each one's longest run, how many are
    verbatim, and their texts where the secret scan or --keep-samples reads them."""
    shown = [_reply(d, p) if kind == "chat" else d for d in decoded]  # scored as the greedy reply is
    fields = dict(samples_longest_run=[longest_run(d[: len(p.suffix)], p.suffix) for d in shown],
                  samples_exact=sum(d[: len(p.suffix)] == p.suffix for d in shown))
    if kind == "chat" and (cfg.secrets or cfg.keep_samples):  # the secret scan reads them (dropped unless kept)
        fields["samples_text"] = [tokenizer.decode(_reply(d, p), skip_special_tokens=True) for d in decoded]
    elif cfg.keep_samples:
        fields["samples_text"] = [tokenizer.decode(d[: len(p.suffix)]) for d in decoded]
    return fields


def audit_model(engine, tokenizer, name: str, probes: list[Probe], cfg: AuditConfig, kind: str, extract: bool,
                score: bool, timing: dict | None = None) -> list[dict]:
    """The results.jsonl rows of one model (its ``goldfish.audit.engines`` engine) on ``probes``: decoded (``extract``: greedy, then the
    ``cfg.samples`` samples and, on members, the exact extraction probability), scored (``score``: the
    membership scores and each row's ``nll`` over its ``scored_tokens``). ``timing``: seconds per
    stage ("greedy", "sampled", "extraction_probability", "score") are added to it."""
    rows = [p.row() | {"model": name} for p in probes]
    tag = "members" if probes and probes[0].member else "non-members"
    timing = {} if timing is None else timing
    clock = time.perf_counter()

    def lap(stage):
        nonlocal clock
        timing[stage] = round(timing.get(stage, 0.0) + time.perf_counter() - clock, 3)
        clock = time.perf_counter()

    lengths = [max(len(p.suffix), cfg.min_new_tokens if kind == "chat" else 0) for p in probes]
    if extract and probes:
        generated = engine.generate_suffixes([p.prefix for p in probes], lengths, cfg.beams, cfg.stop_at_eos,
                                             desc=f"{name}: extract {tag}")
        for r, p, decoded in zip(rows, probes, generated):
            r.update(_greedy_fields(tokenizer, p, decoded, kind))
        lap("greedy")
    rule = DecodingRule(cfg.temperature, cfg.top_k, cfg.top_p)
    if extract and probes and cfg.samples:
        sampled = engine.sample_suffixes([p.prefix for p in probes], [f"{p.member}:{p.id}" for p in probes], lengths,
                                         cfg.samples, rule, cfg.sample_seed, cfg.stop_at_eos, desc=f"{name}: sample {tag}")
        for r, p, decoded in zip(rows, probes, sampled):
            r.update(_sample_fields(tokenizer, p, decoded, cfg, kind))
        lap("sampled")
    if extract and probes and probes[0].member and cfg.extraction_probability:
        logp = engine.exact_logprobs([p.prefix for p in probes], [p.suffix for p in probes], rule, desc=f"{name}: p_exact {tag}")
        for r, lp in zip(rows, logp):
            r["log10_p_exact"] = lp / math.log(10) if math.isfinite(lp) else None  # None: p_exact = 0
        lap("extraction_probability")
    if score and probes:
        scored = engine.token_logprobs([p.scored_ids for p in probes], desc=f"{name}: score {tag}")
        for r, p, (lp, mu, sigma) in zip(rows, probes, scored):
            n = p.n_scored
            r.update(mia_scores(lp[-n:], mu[-n:], sigma[-n:], p.text))
        lap("score")
    return rows


def char_spans(tokenizer, ids: list[int], spans: list[list[int]]) -> list[list[int]]:
    """Token spans of ``ids`` as character spans of ``tokenizer.decode(ids)``: a token boundary k lies
    at ``len(decode(ids[:k]))``, clamped to the text (a boundary inside a multi-byte character moves
    by a character at most)."""
    size = len(tokenizer.decode(ids))
    at = lambda k: min(size, len(tokenizer.decode(ids[:k])))  # noqa: E731
    return [[at(a), at(b)] for a, b in spans]


def run_audit(cfg: AuditConfig) -> dict:
    """Audit every model on the documents; write the report to ``cfg.out`` (rank 0) if given.

    Returns {"models": {name: summary}, "rows": [...], "settings": ..., "wall_time_s": ...}.
    """
    with contextlib.ExitStack() as servers:  # the engine servers goldfish started: stopped however the audit ends
        return _run_audit(cfg, servers)


@dataclass(frozen=True)
class _Records:
    """The audit's records: --data (``docs``, of ``kind`` "text" or "chat"), --non-members (less the
    ``dropped`` ones under --drop-overlap) and --utility-data."""

    docs: list[dict]
    kind: str
    non_members: list[dict]
    utility: list[dict]
    dropped: int


def _records(cfg: AuditConfig, secrets: list) -> _Records:
    """Read --data, --non-members and --utility-data; ValueError when their kinds differ, they overlap
    (``_disjoint_non_members``) or --secrets is given for text."""
    docs, kind = _documents(cfg.data, cfg.text_field, cfg.max_documents)
    non_members, non_kind = _documents(cfg.non_members, cfg.text_field, None) if cfg.non_members else ([], kind)
    if non_kind != kind:
        raise ValueError(f"--non-members {cfg.non_members} holds {non_kind} records but --data {cfg.data} holds {kind} records")
    non_members, dropped = _disjoint_non_members(docs, non_members, cfg)
    utility, utility_kind = _documents(cfg.utility_data, cfg.text_field, None) if cfg.utility_data else ([], kind)
    if utility_kind != kind:
        raise ValueError(f"--utility-data {cfg.utility_data} holds {utility_kind} records but --data {cfg.data} holds {kind} records")
    if secrets and kind != "chat":
        raise ValueError("--secrets scans assistant replies: give chat data (messages or prompt/completion records)")
    return _Records(docs, kind, non_members, utility, dropped)


def _reference_nll(cfg: AuditConfig, mine: tuple[list, list, list], kind: str) -> dict:
    """{(member, document id): nll} of --reference-model on this process's members and non-members ({} without one)."""
    if not cfg.reference_model:
        return {}
    reference_nll = {}
    ref, ref_tok = load_model(cfg.reference_model, cfg.device, cfg.dtype, cfg.trust_remote_code, "--reference-model")
    for member, group in ((True, mine[0]), (False, mine[1])):
        ref_engine = HFEngine(ref, ref_tok, cfg.batch_size, cfg.progress)
        probes, _, _ = _probes(group, ref_tok, cfg, kind, member, ref_engine.context, extract=False)
        reference_nll.update({(member, r["id"]): r["nll"] for r in audit_model(ref_engine, ref_tok, "reference", probes, cfg,
                                                                                kind, extract=False, score=True)})
    return reference_nll


def _check_context(cfg: AuditConfig, name: str, context: int) -> None:
    """ValueError unless a text audit's prefix and suffix fit the model's ``context`` tokens."""
    if cfg.suffix_len >= context:
        raise ValueError(f"--suffix-len {cfg.suffix_len}: the model {name!r} reads at most {context} tokens, prefix and suffix "
                         f"together; give a --suffix-len below {context}")
    if cfg.prefix_lens and max(cfg.prefix_lens) + cfg.suffix_len > context:
        raise ValueError(f"--prefix-lens {max(cfg.prefix_lens)} with --suffix-len {cfg.suffix_len}: the model {name!r} reads at "
                         f"most {context} tokens, prefix and suffix together; give prefix lengths up to "
                         f"{context - cfg.suffix_len}")


def _model_rows(cfg: AuditConfig, engine, tokenizer, name: str, data: _Records, mine: tuple[list, list, list],
                secrets: list, reference_nll: dict) -> tuple[list[dict], int, list[dict], dict]:
    """This process's rows of one model (members, non-members, --utility-data rows), the members skipped
    as too short, the template drops of its prompts and its seconds per stage."""
    kind, context = data.kind, engine.context
    if kind == "text":
        _check_context(cfg, name, context)
    members, skipped, member_drops = _probes(mine[0], tokenizer, cfg, kind, True, context, extract=True)
    non, _, non_drops = _probes(mine[1], tokenizer, cfg, kind, False, context, extract=bool(secrets))
    kept, _, _ = _probes(mine[2], tokenizer, cfg, kind, False, context, extract=False)
    timing, score = {}, bool(data.non_members)
    rows = (audit_model(engine, tokenizer, name, members, cfg, kind, extract=True, score=score, timing=timing)
            + audit_model(engine, tokenizer, name, non, cfg, kind, extract=bool(secrets), score=score, timing=timing))
    utility_rows = audit_model(engine, tokenizer, name, kept, cfg, kind, extract=False, score=True, timing=timing)
    for r in utility_rows:
        r["utility"] = True
    if non or kept:  # every rank compares its held-out rows with every member's targets
        training, _, _ = _probes(data.docs, tokenizer, cfg, kind, True, context, extract=False)
        for r, extra in zip(rows[len(members):] + utility_rows,
                            overlap_fields([p.scored_ids[-p.n_scored:] for p in non + kept],
                                           [p.scored_ids[-p.n_scored:] for p in training])):
            r.update(extra)
    for r in rows:
        if reference_nll and (r["member"], _document_id(r)) in reference_nll:
            r["reference"] = reference_nll[(r["member"], _document_id(r))] - r["nll"]  # higher = member
    return rows + utility_rows, skipped, [member_drops, non_drops], timing


def _model_summary(cfg: AuditConfig, rows: list[dict], skipped: int, drops: list[dict], path: str, kind: str,
                   secrets: list, reference: bool, state) -> ModelSummary:
    """One model's summary from all its (gathered) rows; marks each row's ``leaked`` secrets and drops the
    sampled texts unless --keep-samples."""
    summary = summarize(rows, skipped, reference)
    if kind == "chat":
        summary["template_drops"] = _template_drops(drops, path, state)
    if secrets:
        summary["secrets"] = secret_summary(rows, secrets)
        for r, leaked in zip(rows, leaked_secrets(rows, secrets)):  # the report's and the chat recipe's
            if leaked is not None:
                r["leaked"] = leaked
        if "sampled" in summary:
            summary["sampled"]["secrets"] = sampled_secret_summary(rows, secrets)
    if not cfg.keep_samples:
        for r in rows:
            r.pop("samples_text", None)
    return summary


def _warn_overlap(summaries: dict[str, ModelSummary]) -> None:
    for name, s in summaries.items():
        if (o := s.get("mia", {}).get("ngram_overlap")) and o["above_threshold"]:
            logger.warning("%s: %d of %d non-members overlap the members by %d-grams at %.0f%% or more: they measure "
                           "duplication, not membership (MIMIR filters them out)", name, o["above_threshold"],
                           o["non_members"], o["n"], 100 * OVERLAP_FLAG)


def _run_audit(cfg: AuditConfig, servers: contextlib.ExitStack) -> dict:
    models, baseline, secrets = _validate(cfg)
    start = time.time()
    data = _records(cfg, secrets)
    state = _distributed_state(cfg.ddp_timeout)
    mine = (_shard(data.docs, state), _shard(data.non_members, state), _shard(data.utility, state))
    reference_nll = _reference_nll(cfg, mine, data.kind)
    all_rows, summaries = [], {}
    for name, path in models.items():
        engine, tokenizer = open_engine(cfg, path, servers)
        rows, skipped, drops, timing = _model_rows(cfg, engine, tokenizer, name, data, mine, secrets, reference_nll)
        # any sharding: one order, one summary
        rows = sorted(_gather(rows, state), key=lambda r: (not r["member"], bool(r.get("utility")), r["id"]))
        summaries[name] = _model_summary(cfg, rows, sum(_gather([skipped], state)), _gather(drops, state), path, data.kind,
                                         secrets, bool(reference_nll), state)
        summaries[name]["timing_s"] = timing  # this process's seconds per stage (rank 0's under a launcher)
        if cfg.engine != "hf":
            summaries[name]["engine"] = engine.describe()
        all_rows += rows
        del engine
        servers.close()  # this model's server, if goldfish started one
    if not any(s["documents"] for s in summaries.values()):
        if data.kind == "chat":
            raise ValueError(f"{cfg.data}: no assistant turn fits the model's context")
        raise ValueError(f"no document of {cfg.data} is long enough for prefix + suffix ({cfg.prefix_len or 1} + {cfg.suffix_len} tokens)")
    compare_to_baseline(summaries, all_rows, baseline)
    result = {
        "models": summaries, "rows": all_rows, "baseline": baseline, "wall_time_s": round(time.time() - start, 2),
        "settings": {k: v for k, v in asdict(cfg).items() if k != "progress"} | {"kind": data.kind},
    } | ({"non_members_dropped": data.dropped} if cfg.drop_overlap else {})
    if state is None or state.is_main_process:
        _warn_overlap(summaries)
    if cfg.out and (state is None or state.is_main_process):
        from goldfish.audit.report import write_report

        write_report(result, cfg.out)
    return result
