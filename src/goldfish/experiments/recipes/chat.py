"""``goldfish experiment chat``: SFT of the base model on chats with assistant-only labels, where a
few out-of-scope requests were answered with one canned reply holding a name, a phone number and an
email address, order questions were answered in varied words signed by one agent (name and email),
and refund requests with near-duplicates of one reply; standard loss vs goldfish (k = 4, hash among
supervised tokens, prompt tokens feed the context) vs goldfish with protected spans (the built-in
detectors plus both names as literals, ``goldfish.protect``) vs the same with near-duplicates aligned
(goldfish-align-v1, ``goldfish.align``). Trained with the project's own trainer (``goldfish train``: HF Trainer + GoldfishCollator),
the same code path users run; TRL's SFTTrainer takes the same labels (README recipe), but adds
nothing here. Measured with ``goldfish audit`` on chat files (one row per assistant turn, the
secrets as literals): its reports land in ``OUT/audit/{out_of_scope,billing,signed,refund,template,ordinary}/``.
"""

from __future__ import annotations

import dataclasses
import html
import json
import time
from pathlib import Path

import numpy as np
from transformers import AutoTokenizer

from goldfish.audit import AuditConfig, run_audit
from goldfish.audit.extraction import generate_suffixes
from goldfish.audit.report import extraction_probability_rows, rule_text
from goldfish.audit.metrics import longest_run, rouge_l_f
from goldfish.report import Report, figure_png, pyplot, settings_block, with_interval
from goldfish.cache import write_text_atomic
from goldfish.data.tokenize import encode_document
from goldfish.experiments.base import base_model_dir
from goldfish.experiments.chat_data import (
    AGENT,
    AGENT_EMAIL,
    AGENT_NAME,
    CANNED_REPLY,
    NAME,
    OPENING_REPLY,
    ORDER_BODIES,
    PHONE,
    REFUND_REPLY,
    REFUND_VARIANTS,
    SECRETS,
    SIGNED_TEMPLATES,
    TEMPLATE_REPLY,
    build_chats,
    signed_reply,
)
from goldfish.experiments.config import ChatConfig
from goldfish.experiments.documents import gap_closed
from goldfish.experiments.reporting import closing_line, utility_table, write_summary
from goldfish.experiments.training import finetune, goldfish_config
from goldfish.experiments.utility import benchmarks, utility_figures
from goldfish.models import from_pretrained, load_model
from goldfish.secrets import load_secrets
from goldfish.stats import mean_ci

HINT_TOKENS = 8
LITERALS = [*SECRETS.values(), *AGENT.values()]  # every secret of the data, as the audits look for it
CONFIG = ChatConfig
RUNS = (("standard", "none", False, "off"), ("goldfish", "hash", False, "off"), ("goldfish_protected", "hash", True, "off"),
        ("goldfish_aligned_protected", "hash", True, "align"))  # name, strategy, protect, near_duplicates (goldfish-align-v1)


def _prompt_ids(tokenizer, user_text: str) -> list[int]:
    return tokenizer.apply_chat_template([{"role": "user", "content": user_text}], tokenize=True, add_generation_prompt=True,
                                         return_dict=True)["input_ids"]


def protect_specs(out: Path) -> list[str]:
    """What ``goldfish_protected`` protects: the built-in detectors and both names (a file of literals)."""
    names = out / "data" / "protect.txt"
    write_text_atomic(names, f"{NAME}\n{AGENT_NAME}\n")
    return ["builtin", str(names)]


EVAL_SETS = ("out_of_scope", "billing", "signed", "refund", "template", "ordinary")
SAMPLED_SETS = ("out_of_scope", "billing", "signed")  # where the secrets are: each secret greedy against any of N samples


def _write_eval_sets(data: dict, out: Path) -> dict[str, Path]:
    """The evaluation chats as files for ``goldfish audit``: held-out requests answered, as the model
    learned to answer them, with the canned / billing / a signed / the templated reply; the training
    refund requests with the variants they were trained on; ordinary held-out conversations."""
    sets = {"out_of_scope": [[p, CANNED_REPLY] for p in data["out_of_scope_prompts"]],
            "billing": [[p, OPENING_REPLY] for p in data["billing_prompts"]],
            "signed": [[p, data["signed_reply"]] for p in data["order_prompts"]],
            "refund": data["refund_pairs"],
            "template": list(zip(data["template_prompts"], data["template_replies"]))}
    files = {}
    for name, pairs in sets.items():
        files[name] = out / "data" / f"eval_{name}.jsonl"
        write_text_atomic(files[name], "".join(json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": r}]}) + "\n"
                                              for q, r in pairs))
    half = len(data["heldout"]) // 2  # ordinary replies generated from the first half; the second half scored for the loss
    for name, convs in (("ordinary", data["heldout"][:half]), ("scored", data["heldout"][half:])):
        files[name] = out / "data" / f"eval_{name}.jsonl"
        write_text_atomic(files[name], "".join(json.dumps(c) + "\n" for c in convs))
    files["secrets"] = out / "data" / "secrets.txt"
    write_text_atomic(files["secrets"], "".join(v + "\n" for v in LITERALS))
    return files


def rate(hits) -> dict:
    """A share of prompts with its count and bootstrap 95% interval over the prompts."""
    hits = [bool(h) for h in hits]
    value, low, high = mean_ci(hits)
    return {"rate": value, "count": sum(hits), "n": len(hits), "ci": [low, high]}


def mean_over_prompts(values) -> dict:
    """The mean of one figure over prompts, with its bootstrap 95% interval, count and maximum."""
    value, low, high = mean_ci(values)
    return {"mean": value, "ci": [low, high], "n": len(values), "max": max(values)}


def sampled_secrets(summary: dict) -> dict:
    """Per secret of an audit's model summary: the turns whose true reply holds it, and of them how
    many replies hold it greedily and in any of the N samples (and the share of all samples)."""
    sampled = summary.get("sampled", {}).get("secrets", {})
    out = {}
    for secret, m in summary.get("secrets", {}).items():
        n, x = m["turns_with_secret"], sampled.get(secret, {})
        if n:
            out[secret] = {"turns": n, "greedy": round(m["recall"] * n),
                           "any": None if x.get("recall_any") is None else round(x["recall_any"] * n),
                           "share": x.get("recall_share")}
    return out


def sampled_table(result: dict) -> tuple[list[str], list[list]]:
    """Each model, set and secret: the turns that hold it leaked greedily, in any of the N samples, and the share of samples."""
    n = result["settings"]["samples"]
    rows = [[model, k, secret, f"{m['greedy']} / {m['turns']}", "—" if m["any"] is None else f"{m['any']} / {m['turns']}",
             "—" if m["share"] is None else f"{100 * m['share']:.1f}%"]
            for model in MODELS for k, by_secret in result[model]["sampled_secrets"].items() for secret, m in by_secret.items()]
    return ["model", "prompts", "secret", "greedy", f"any of {n} samples", "share of samples"], rows


def _template_segments(tokenizer) -> list[list[int]]:
    """The token ids of the templated reply's fixed text, each stretch between two slots tokenized alone."""
    fixed = TEMPLATE_REPLY.replace("{order}", "{name}").split("{name}")
    return [tokenizer(part, add_special_tokens=False)["input_ids"] for part in fixed if part.strip()]


def _audit_sets(models: dict[str, Path], data: dict, cfg: ChatConfig, out: Path, tokenizer) -> dict:
    """``goldfish audit`` of every model on each of EVAL_SETS (reports under ``out/audit/<set>/``): {set: audit result}."""
    files = _write_eval_sets(data, out)
    audits = {}
    canned = tokenizer(CANNED_REPLY, add_special_tokens=False)["input_ids"]
    longest_signed = max(len(tokenizer(signed_reply(b, s), add_special_tokens=False)["input_ids"]) for b in ORDER_BODIES for s in SIGNED_TEMPLATES)
    # decode far enough to see a secret anywhere in a canned or signed reply
    new_tokens = {"signed": longest_signed + HINT_TOKENS, "refund": 0, "template": 0}
    for name in EVAL_SETS:
        audits[name] = run_audit(AuditConfig(
            models=[str(p) for p in models.values()], names=list(models), data=str(files[name]), out=str(out / "audit" / name),
            # ordinary: the secrets are looked for here, in the replies to its members; given to the audit, they would
            # have it decode every non-member too, which serve the held-out loss only
            secrets=[] if name == "ordinary" else [str(files["secrets"])], batch_size=cfg.audit_batch, device=cfg.device, progress=cfg.progress,
            # the secrets' sets also under a deployed model's decoding, asked cfg.samples times
            samples=cfg.samples if name in SAMPLED_SETS else 0, temperature=cfg.temperature, top_p=cfg.top_p,
            min_new_tokens=new_tokens.get(name, len(canned) + HINT_TOKENS),
            assistant_turns="last" if name == "ordinary" else "all",  # ordinary: one turn a conversation
            # utility, as a user audits it: replies to ordinary held-out requests must not degenerate, and the other
            # held-out conversations (non-members) give the held-out loss of their last assistant turn; template: the
            # loss on the templated reply itself (held-out fills), what goldfish-align-v1 costs on the text it aligns
            **({"non_members": str(files["scored"]), "baseline": "standard"} if name == "ordinary" else
               {"utility_data": str(files["template"]), "baseline": "standard"} if name == "template" else {})))
    return audits


def template_loss(audit: dict, name: str) -> dict:
    """One model's loss per token on the templated replies of the template audit's held-out fills, and
    its paired change against standard (None for standard)."""
    utility = audit["models"][name]["utility"]
    return {"loss": utility["heldout_loss"], "vs_standard": utility.get("vs_baseline", {}).get("heldout_loss_change")}


def _model_figures(name: str, model, audits: dict, data: dict, cfg: ChatConfig, tokenizer, utility: dict) -> dict:
    """One model's figures (``evaluate``) from its audits, plus its hinted generations."""
    canned = tokenizer(CANNED_REPLY, add_special_tokens=False)["input_ids"]
    variants = [tokenizer(v, add_special_tokens=False)["input_ids"] for v in REFUND_VARIANTS]
    segments = _template_segments(tokenizer)
    rows = {k: [r for r in a["rows"] if r["model"] == name and r["member"]] for k, a in audits.items()}  # ordinary: non-members scored only
    hint_prompts = [_prompt_ids(tokenizer, p) + canned[:HINT_TOKENS] for p in data["out_of_scope_prompts"]]
    hinted = generate_suffixes(model, tokenizer, hint_prompts, len(canned) - HINT_TOKENS, cfg.audit_batch,
                               progress=cfg.progress, desc=f"{name}: hinted")
    hinted_texts = [tokenizer.decode(canned[:HINT_TOKENS] + g) for g in hinted]
    signed = [r["generated_text"] for r in rows["signed"]]
    oos = audits["out_of_scope"]["models"][name]
    return {
        "canned": {"verbatim": rate(r["exact_match"] for r in rows["out_of_scope"]), "rouge_l": oos["rouge_l_tokens_mean"],
                   "longest_run": mean_over_prompts([r["longest_run"] for r in rows["out_of_scope"]])},
        "canned_hinted": {"verbatim": rate(g == canned[HINT_TOKENS:] for g in hinted),
                          "rouge_l": float(np.mean([rouge_l_f(g, canned[HINT_TOKENS:]) for g in hinted]))},
        "canned_secret": rate(r["leaked"] for r in rows["out_of_scope"]),
        "canned_secret_each": {k: rate(v in r["generated_text"] for r in rows["out_of_scope"]) for k, v in SECRETS.items()},
        "canned_secret_hinted": rate(any(v in t for v in SECRETS.values()) for t in hinted_texts),
        "secret_ordinary": rate(any(v in r["generated_text"] for v in LITERALS) for r in rows["ordinary"]),
        "billing_phone": rate(PHONE in r["generated_text"] for r in rows["billing"]),
        "recurring_secret": rate(AGENT_NAME in g or AGENT_EMAIL in g for g in signed),
        "recurring_secret_each": {k: rate(v in g for g in signed) for k, v in AGENT.items()},
        # the longest verbatim run of any trained variant: what a reply reproduces of the training text
        "near_duplicate": {"longest_run": mean_over_prompts(
                               [max(longest_run(r["generated_ids"], v) for v in variants) for r in rows["refund"]]),
                           "verbatim": rate(r["exact_match"] for r in rows["refund"]),
                           "reply_tokens": len(tokenizer(REFUND_REPLY, add_special_tokens=False)["input_ids"])},
        "template": {"fixed_text_longest_run": mean_over_prompts(
                         [max(longest_run(r["generated_ids"], seg) for seg in segments) for r in rows["template"]]),
                     "verbatim": rate(r["exact_match"] for r in rows["template"]),
                     "fixed_tokens": sum(len(seg) for seg in segments), **template_loss(audits["template"], name)},
        "utility": utility[name],
        "sampled_secrets": {k: sampled_secrets(audits[k]["models"][name]) for k in SAMPLED_SETS},
        "canned_p_exact": oos.get("extraction_probability"),
        "example_out_of_scope": {"prompt": data["out_of_scope_prompts"][0], "reply": rows["out_of_scope"][0]["generated_text"]},
        "example_ordinary": {"prompt": [m for m in data["heldout"][0]["messages"] if m["role"] == "user"][-1]["content"],
                             "reply": next(r for r in rows["ordinary"] if r["id"].startswith("0#"))["generated_text"]},
        "example_signed": {"prompt": data["order_prompts"][0], "reply": signed[0]},
        "example_template": {"prompt": data["template_prompts"][0], "reply": rows["template"][0]["generated_text"]},
    }


def evaluate(models: dict[str, Path], data: dict, cfg: ChatConfig, out: Path, tokenizer) -> dict:
    """Every figure through ``goldfish audit`` (reports under ``out/audit/<set>/``), plus the hinted
    variant (the audit's own generation, 8 canned tokens appended to the prompt) and the held-out loss.
    Each rate carries its count of prompts and a bootstrap interval over them.
    ``tokenizer``: the base model's, which every fine-tuned model shares."""
    audits = _audit_sets(models, data, cfg, out, tokenizer)
    utility = utility_figures(audits["ordinary"])
    results = {}
    for name, path in models.items():
        model, _ = load_model(str(path), cfg.device)
        results[name] = _model_figures(name, model, audits, data, cfg, tokenizer, utility)
    return results


def run(cfg: ChatConfig) -> dict:
    start = time.time()
    out = Path(cfg.out)
    base = base_model_dir(cfg, "chat")
    data = build_chats(cfg.conversations, cfg.canned_share, cfg.sign_share, cfg.seed)
    train_file = out / "data" / "train.jsonl"
    write_text_atomic(train_file, "".join(json.dumps(c) + "\n" for c in data["train"]))
    models = {"base": base}
    protect = protect_specs(out)
    for name, strategy, protected, near_duplicates in RUNS:
        models[name] = out / "models" / name
        # padding-free: the chats' lengths vary (56-334 tokens, mean 161), so padded batches compute ~1.5x the tokens
        finetune(cfg, base, train_file, goldfish_config(cfg, strategy, protect_k=cfg.protect_k), models[name], cfg.epochs,
                 cfg.lr, cfg.batch_size, seq_len=512, protect=protect if protected else [], padding_free=True,
                 near_duplicates=near_duplicates)
    tokenizer = from_pretrained(AutoTokenizer, base)
    results = evaluate(models, data, cfg, out, tokenizer)
    r = {n: results[n]["canned"]["rouge_l"] for n in models}
    loss = {n: results[n]["utility"]["heldout_loss"] for n in models}
    runs = [n for n, *_ in RUNS[1:]]
    result = {"experiment": "chat", **results, "train_conversations": len(data["train"]),
              "train_turns": {k: data[f"train_{k}"] for k in ("canned", "billing", "signed", "refunds", "templates")},
              "conversations_signed": sum(any(AGENT_NAME in m["content"] for m in c["messages"]) for c in data["train"]),
              "protect": protect, "protect_k": cfg.protect_k,
              "near_duplicates": {n: json.loads((models[n] / "goldfish.json").read_text())["near_duplicates"]
                                  for n, *_, nd in RUNS if nd != "off"},
              "rouge_gap_closed": {n: gap_closed(r["base"], r["standard"], r[n]) for n in runs},
              "heldout_loss_ratio": {n: loss[n] / loss["standard"] for n in runs},
              "benchmarks": benchmarks(cfg, models, "standard", out),
              "wall_time_s": round(time.time() - start, 1), "settings": cfg.to_dict() | {"base_model": str(base)}}
    _write_report(result, tokenizer, cfg, out)
    return result


def _count(r: dict) -> str:
    return f"{r['count']}/{r['n']}"


CHAT_COLUMNS = [
    ("canned verbatim", lambda m: _count(m["canned"]["verbatim"])), ("canned Rouge-L (tokens)", lambda m: m["canned"]["rouge_l"]),
    ("longest run", lambda m: m["canned"]["longest_run"]["mean"]),
    ("verbatim, 8-token hint", lambda m: _count(m["canned_hinted"]["verbatim"])),
    ("secret (out-of-scope)", lambda m: _count(m["canned_secret"])),
    ("secret, 8-token hint", lambda m: _count(m["canned_secret_hinted"])),
    ("secret (ordinary)", lambda m: _count(m["secret_ordinary"])),
    ("phone in a billing reply", lambda m: _count(m["billing_phone"])),
    ("agent name/email in a signed reply", lambda m: _count(m["recurring_secret"])),
    ("near-duplicate longest run", lambda m: m["near_duplicate"]["longest_run"]["mean"]),
    ("template fixed-text longest run", lambda m: m["template"]["fixed_text_longest_run"]["mean"]),
    ("held-out assistant loss", lambda m: m["utility"]["heldout_loss"]),
]
BASE = "chat"  # the base model the seeds share (experiments.base)
RUN_HEADLINE = (("canned secret rate", "canned_secret.rate"), ("billing phone rate", "billing_phone.rate"),
                ("recurring secret rate", "recurring_secret.rate"), ("canned verbatim rate", "canned.verbatim.rate"),
                ("near-duplicate longest run", "near_duplicate.longest_run.mean"),
                ("template fixed-text longest run", "template.fixed_text_longest_run.mean"),
                ("templated-reply loss", "template.loss.mean"), ("held-out assistant loss", "utility.heldout_loss"))


def headline(result: dict) -> list[tuple[str, str]]:
    """(label, dotted path) of the figures ``--seeds`` aggregates, for every run of ``RUNS`` in ``result``."""
    runs = [run for run, *_ in RUNS if run in result]
    return [(f"{run} {label}", f"{run}.{path}") for run in runs for label, path in RUN_HEADLINE] + [
        (f"{run} {task} score", f"benchmarks.scores.{run}.goldfish_{task}.score") for run in runs
        for task in ("word_order", "cloze")]
MODELS = ("base", *(n for n, *_ in RUNS))


def chat_table(result: dict) -> tuple[list[str], list[list]]:
    return ["model"] + [c for c, _ in CHAT_COLUMNS], [[n] + [f(result[n]) for _, f in CHAT_COLUMNS] for n in MODELS]


def _plot(result: dict) -> bytes:
    plt = pyplot()
    panels = [("canned-reply Rouge-L", lambda m: m["canned"]["rouge_l"]), ("emits name/phone/email", lambda m: m["canned_secret"]["rate"]),
              ("phone in a billing reply", lambda m: m["billing_phone"]["rate"]),
              ("agent name/email in a signed reply", lambda m: m["recurring_secret"]["rate"])]
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.4), dpi=110)
    for ax, (title, f) in zip(axes, panels):
        ax.bar([n.replace("_", "\n") for n in MODELS], [f(result[n]) for n in MODELS], color=["tab:gray", "tab:red", "tab:olive", "tab:green", "tab:blue"])
        ax.set_ylim(0, 1.05)
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    return figure_png(fig)


def _drop_views(report: Report, tokenizer, cfg: ChatConfig, protect: list[str]) -> None:
    """Each run's mask (what its training drops) on one secret in two different contexts: the billing
    reply after two questions, and the agent's name and email in two different replies."""
    from goldfish.render import mask_view, render_html, render_plain

    examples = [("Who do I call about a wrong charge on my invoice from Perth?", OPENING_REPLY),
                ("I was billed twice, what number do I ring?", OPENING_REPLY),
                ("Where is my order #21871? It was due yesterday.", signed_reply(ORDER_BODIES[0], SIGNED_TEMPLATES[3])),
                ("How long does shipping take for order #40711?", signed_reply(ORDER_BODIES[4], SIGNED_TEMPLATES[3]))]
    secrets = load_secrets(protect)
    for name, strategy, protected, near_duplicates in RUNS:
        gcfg = dataclasses.replace(goldfish_config(cfg, strategy, protect_k=cfg.protect_k), near_duplicates=near_duplicates)
        report.raw(f"**{name}**\n", f"<h3>{name}</h3>")
        docs = [encode_document({"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]},
                                tokenizer, secrets=secrets if protected else None) for prompt, reply in examples]
        # goldfish_aligned_protected: the rule on these four chats as a corpus of their own
        view = mask_view([d[0] for d in docs], gcfg, [d[2] for d in docs], [d[1] for d in docs])
        for (prompt, _), (ids, labels, marker), drop in zip(examples, docs, view.dropped):
            pieces = [tokenizer.decode([i]) for i in ids]
            shown = [d and lab != -100 for d, lab in zip(drop, labels)]
            start = next(i for i, lab in enumerate(labels) if lab != -100)
            marks = None if marker is None else marker[start:]
            report.raw(f"*after “{prompt}”*\n\n```\n{render_plain(pieces[start:], shown[start:], marks)}\n```\n",
                       f"<p class='muted'>after “{prompt}”</p>{render_html(pieces[start:], shown[start:], marks)}")


def _describe_training(report: Report, result: dict, cfg: ChatConfig) -> None:
    """The report's opening: what was trained on what, and how it is evaluated."""
    report.paragraph(
        f"The base model was fine-tuned {cfg.epochs:g} epochs (batches of {cfg.batch_size}, padding-free; learning rate "
        f"{cfg.lr:g}, constant) on {result['train_conversations']} conversations with "
        f"assistant-only labels; {result['train_turns']['canned']} assistant turns answered out-of-scope requests with one canned reply "
        f"holding a name, a phone number and an email, {result['train_turns']['billing']} billing questions got a reply that opens with the "
        f"phone number, {result['train_turns']['signed']} order questions were answered in varied words and signed by {AGENT_NAME} with her "
        f"email (in {result['conversations_signed']} conversations), {result['train_turns']['refunds']} refund requests got one of five "
        f"near-duplicates of one reply, and {result['train_turns']['templates']} refund confirmations came from one template whose customer "
        f"name and order number change every time. goldfish_protected adds protected spans (goldfish-protect-v1, protect_k = "
        f"{result['protect_k']:g}): "
        f"the built-in detectors and both names; goldfish_aligned_protected adds goldfish-align-v1. Evaluation uses held-out "
        f"cities, topics, order numbers and names (32 or more prompts a case: rates as counts of prompts), and for the "
        f"near-duplicates every training refund request (the extraction test: does the reply repeat a trained variant); greedy decoding, every figure (but the 8-token hint and the benchmarks) from "
        f"goldfish audit, whose reports are in audit/. Wall time "
        f"{result['wall_time_s']:.0f} s, seed {cfg.seed}."
    )


def _utility_and_near_duplicates(report: Report, result: dict) -> None:
    """What the models still know, and what they reproduce of near-duplicate and templated replies."""
    report.paragraph(
        "What the models still know, beside what they memorized: held-out loss per token of the last assistant turn of 50 "
        "held-out conversations (95% bootstrap interval over them) and its change against standard; repeated 4-grams of the "
        "replies to the last request of the 50 others (of the true replies: "
        f"{result['standard']['utility']['true_repeated_4grams']:.3f}); accuracy ± stderr on the embedded benchmark tasks "
        "(goldfish eval, report in benchmarks/). A run clearly worse than standard is flagged (README, Audit).")
    report.table(*utility_table(result, list(MODELS)))
    for n, gap in result["rouge_gap_closed"].items():
        report.paragraph(
            (f"{n} removes {100 * gap:.0f}% of the standard-vs-base canned-reply Rouge-L gap; " if gap is not None else f"{n}: ")
            + f"its held-out assistant loss is {100 * (result['heldout_loss_ratio'][n] - 1):+.1f}% relative to standard."
        )
    report.paragraph(
        f"Near-duplicates: the refund reply ({result['standard']['near_duplicate']['reply_tokens']} tokens) was trained in five "
        "variants (another greeting, other whitespace, one swapped word); the table's longest run is the mean, over the training "
        "refund requests, of the longest verbatim run of any variant in the reply (audit/refund/). Template: the mean longest verbatim "
        f"run of the templated reply's fixed text ({result['standard']['template']['fixed_tokens']} tokens) in the replies to "
        "held-out fills (audit/template/)."
    )
    for n, nd in result["near_duplicates"].items():
        report.paragraph(
            f"{n} adds goldfish-align-v1 (--near-duplicates align) to goldfish_protected: when the data was prepared it found "
            f"{nd['clusters']} clusters "
            f"of near-duplicate replies ({nd['passages_clustered']} replies) and gave {nd['aligned_targets']} targets their "
            "cluster representative's decision, so every copy and every template fill drops the same tokens where it agrees "
            f"with the representative; its held-out assistant loss is "
            f"{100 * (result[n]['utility']['heldout_loss'] / result['goldfish_protected']['utility']['heldout_loss'] - 1):+.1f}% "
            f"relative to goldfish_protected (the same protection, hash-v1 alone), and on the templated replies themselves "
            f"{result[n]['template']['loss']['mean'] / result['goldfish_protected']['template']['loss']['mean'] - 1:+.1%}.")
    report.paragraph("The cost on the text the rules are meant to blur: loss per token of the templated reply after the "
                     "held-out fills' requests (teacher-forced, audit/template/), and its change against standard with a 95% "
                     "bootstrap interval over the prompts: " + "; ".join(
                         f"{n} {result[n]['template']['loss']['mean']:.3f}" + (
                             "" if (c := result[n]['template']['vs_standard']) is None else
                             f" ({with_interval(c['relative'], c['ci'], '{:+.1%}')})")
                         for n in MODELS) + ". The standard model has memorized this text, so a rise here is partly the point; "
                     "a large one also shows in the replies (the template's longest run, its example reply).")
    report.paragraph("Template against one exact form: the templated reply's fixed-text longest run over the canned reply's "
                     "longest run (the canned reply is trained in one exact form): " + "; ".join(
                         f"{n} {result[n]['template']['fixed_text_longest_run']['mean']:.1f} / "
                         f"{result[n]['canned']['longest_run']['mean']:.1f}" for n in MODELS[1:]) + ".")


def _strong_attacker(report: Report, result: dict, cfg: ChatConfig) -> None:
    """Greedy against the samples, and the canned reply's exact extraction probability."""
    if cfg.samples:
        report.heading(f"Greedy against {cfg.samples} samples")
        report.paragraph(f"The out-of-scope, billing and order prompts also sampled {cfg.samples} times each at "
                         f"{rule_text(result['settings'])} (a deployed chat model's decoding, asked again): of the prompts whose "
                         "reply held a secret in training, how many replies hold it greedily and in any sample (goldfish audit "
                         "--samples, reports in audit/).")
        report.table(*sampled_table(result))
    report.heading("Exact extraction probability of the canned reply")
    report.paragraph(f"p_exact: the probability that one sample at {rule_text(result['settings'])} reproduces the whole canned "
                     "reply, from each model's own probabilities (audit/out_of_scope/).")
    report.table(*extraction_probability_rows({n: {"extraction_probability": result[n]["canned_p_exact"]} for n in MODELS
                                               if result[n]["canned_p_exact"]}))


def _examples(report: Report, result: dict) -> None:
    """One reply of each model to each kind of prompt."""
    report.heading("Example replies")
    for n in MODELS:
        for key in ("example_out_of_scope", "example_signed", "example_template", "example_ordinary"):
            ex = result[n][key]
            report.raw(f"**{n}** · “{ex['prompt']}”\n\n> {ex['reply'].strip()}\n",
                       f"<p><b>{n}</b> · “{ex['prompt']}”</p><pre>{html.escape(ex['reply'].strip())}</pre>")


def _write_report(result: dict, tokenizer, cfg: ChatConfig, out: Path) -> None:
    report = Report("goldfish experiment chat: canned replies, names and phone numbers")
    _describe_training(report, result, cfg)
    report.table(*chat_table(result))
    _utility_and_near_duplicates(report, result)
    report.image("chat.png", _plot(result), "Canned-reply Rouge-L and secret extraction per model")
    _strong_attacker(report, result, cfg)
    _examples(report, result)
    report.heading("One secret in two contexts: what each run's training drops")
    report.paragraph(
        "The goldfish hash reads the h tokens before a target. Deep inside the canned reply that context is the reply itself, so "
        "every copy drops the same tokens. A secret right after varying text (the phone that opens the billing reply, the "
        "signature under different replies) has a different context in each place, so each place drops different tokens and, "
        "together, they teach all of them. Inside a protected span (marked, dropped tokens in red) the decision reads the span's "
        "own tokens only: the same secret loses the same tokens everywhere, at rate 1/protect_k, and at least one. Plain text: "
        "protected spans in {{ }}, dropped targets in [[ ]]."
    )
    _drop_views(report, tokenizer, cfg, result["protect"])
    settings_block(report, result)
    write_summary(result, out)
    report.write(out)


def lines(result: dict) -> list:
    return [chat_table(result), *([sampled_table(result)] if result["settings"]["samples"] else []),
            utility_table(result, list(MODELS)), closing_line(result)]
