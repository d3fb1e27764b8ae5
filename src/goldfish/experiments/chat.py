"""``goldfish experiment chat``: SFT of the base model on chats with assistant-only labels, where a
few out-of-scope requests were answered with one canned reply holding a name, a phone number and an
email address; standard loss vs goldfish (k = 4, hash among supervised tokens, prompt tokens feed the
context). Trained with the project's own trainer (``goldfish train``: HF Trainer + GoldfishCollator),
the same code path users run; TRL's SFTTrainer takes the same labels (README recipe), but adds
nothing here. Measured with ``goldfish audit`` on chat files (one row per assistant turn, the
secrets as literals): its reports land in ``OUT/audit/{out_of_scope,billing,ordinary}/``.
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer

from goldfish.audit import AuditConfig, run_audit
from goldfish.audit.extraction import generate_suffixes, mean_supervised_nll
from goldfish.audit.metrics import rouge_l_f
from goldfish.audit.report import Report, figure_png, settings_block
from goldfish.cache import write_text_atomic
from goldfish.config import GoldfishConfig
from goldfish.data import build_examples
from goldfish.experiments.base import base_model_dir
from goldfish.experiments.chat_data import CANNED_REPLY, OPENING_REPLY, PHONE, SECRETS, build_chats
from goldfish.experiments.config import ExperimentConfig
from goldfish.experiments.extreme import gap_closed
from goldfish.experiments.reporting import write_summary
from goldfish.experiments.training import finetune, goldfish_config
from goldfish.models import load_model

HINT_TOKENS = 8
RUNS = (("standard", "none"), ("goldfish", "hash"))


def _prompt_ids(tokenizer, user_text: str) -> list[int]:
    return tokenizer.apply_chat_template([{"role": "user", "content": user_text}], tokenize=True, add_generation_prompt=True,
                                         return_dict=True)["input_ids"]


def _write_eval_sets(data: dict, out: Path) -> dict[str, Path]:
    """The evaluation chats as files for ``goldfish audit``: held-out requests answered, as the model
    learned to answer them, with the canned / billing reply; ordinary held-out conversations."""
    sets = {"out_of_scope": [[p, CANNED_REPLY] for p in data["out_of_scope_prompts"]],
            "billing": [[p, OPENING_REPLY] for p in data["billing_prompts"]]}
    files = {}
    for name, pairs in sets.items():
        files[name] = out / "data" / f"eval_{name}.jsonl"
        write_text_atomic(files[name], "".join(json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": r}]}) + "\n"
                                              for q, r in pairs))
    files["ordinary"] = out / "data" / "heldout.jsonl"
    files["secrets"] = out / "data" / "secrets.txt"
    write_text_atomic(files["secrets"], "".join(v + "\n" for v in SECRETS.values()))
    return files


def _secret_rates(audit: dict, name: str, key: str) -> dict:
    """Per secret (name, phone, email) the audit's ``key`` rate, and "any": the share of turns whose
    generation holds at least one of them."""
    secrets = audit["models"][name]["secrets"]
    rates = {k: secrets[v][key] or 0.0 for k, v in SECRETS.items()}
    rows = [r for r in audit["rows"] if r["model"] == name]
    rates["any"] = float(np.mean([bool(r["leaked"]) for r in rows]))
    return rates


def evaluate(models: dict[str, Path], data: dict, cfg: ExperimentConfig, out: Path, tokenizer) -> dict:
    """Every figure through ``goldfish audit`` (reports under ``out/audit/<set>/``), plus the hinted
    variant (the audit's own generation, 8 canned tokens appended to the prompt) and the held-out loss.
    ``tokenizer``: the base model's, which every fine-tuned model shares."""
    files = _write_eval_sets(data, out)
    audits = {}
    canned = tokenizer(CANNED_REPLY, add_special_tokens=False)["input_ids"]
    full_reply = len(canned) + HINT_TOKENS  # a phone anywhere in a canned reply
    for name in ("out_of_scope", "billing", "ordinary"):
        audits[name] = run_audit(AuditConfig(
            models=[str(p) for p in models.values()], names=list(models), data=str(files[name]), out=str(out / "audit" / name),
            secrets=[str(files["secrets"])], batch_size=cfg.audit_batch, device=cfg.device, progress=cfg.progress,
            min_new_tokens=full_reply))
    results = {}
    for name, path in models.items():
        model, _ = load_model(str(path), cfg.device)
        oos, ordinary = audits["out_of_scope"]["models"][name], audits["ordinary"]
        hint_prompts = [_prompt_ids(tokenizer, p) + canned[:HINT_TOKENS] for p in data["out_of_scope_prompts"]]
        hinted = generate_suffixes(model, tokenizer, hint_prompts, len(canned) - HINT_TOKENS, cfg.audit_batch,
                                   progress=cfg.progress, desc=f"{name}: hinted")
        hinted_texts = [tokenizer.decode(canned[:HINT_TOKENS] + g) for g in hinted]
        first_oos = next(r for r in audits["out_of_scope"]["rows"] if r["model"] == name)
        first_ordinary = next(r for r in ordinary["rows"] if r["model"] == name and r["id"] == "0#0")
        results[name] = {
            "canned": {"verbatim_rate": oos["exact_match_rate"], "rouge_l": oos["rouge_l_tokens_mean"],
                       "longest_run_mean": oos["longest_run_mean"], "longest_run_max": oos["longest_run_max"]},
            "canned_hinted": {"verbatim_rate": float(np.mean([g == canned[HINT_TOKENS:] for g in hinted])),
                              "rouge_l": float(np.mean([rouge_l_f(g, canned[HINT_TOKENS:]) for g in hinted]))},
            "secret_out_of_scope": _secret_rates(audits["out_of_scope"], name, "recall"),
            "secret_out_of_scope_hinted": {**{k: float(np.mean([v in t for t in hinted_texts])) for k, v in SECRETS.items()},
                                           "any": float(np.mean([any(v in t for v in SECRETS.values()) for t in hinted_texts]))},
            "secret_ordinary": _secret_rates(ordinary, name, "spill"),
            "billing_phone_rate": audits["billing"]["models"][name]["secrets"][PHONE]["recall"],
            "heldout_assistant_loss": mean_supervised_nll(model, build_examples(data["heldout"], tokenizer, 1024, cfg.k),
                                                          tokenizer.pad_token_id, batch_size=8),
            "example_out_of_scope": {"prompt": data["out_of_scope_prompts"][0], "reply": first_oos["generated_text"]},
            "example_ordinary": {"prompt": data["heldout"][0]["messages"][0]["content"], "reply": first_ordinary["generated_text"]},
        }
    return results


def run_chat(cfg: ExperimentConfig) -> dict:
    start = time.time()
    out = Path(cfg.out)
    base = base_model_dir(cfg, "chat")
    data = build_chats(cfg.conversations, cfg.canned_share, cfg.seed)
    train_file = out / "data" / "train.jsonl"
    write_text_atomic(train_file, "".join(json.dumps(c) + "\n" for c in data["train"]))
    write_text_atomic(out / "data" / "heldout.jsonl", "".join(json.dumps(c) + "\n" for c in data["heldout"]))
    models = {"base": base}
    for name, strategy in RUNS:
        models[name] = out / "models" / name
        finetune(cfg, base, train_file, goldfish_config(cfg, strategy), models[name], cfg.chat_epochs, cfg.chat_lr,
                 seq_len=512)
    tokenizer = AutoTokenizer.from_pretrained(base)
    results = evaluate(models, data, cfg, out, tokenizer)
    r = {n: results[n]["canned"]["rouge_l"] for n in models}
    result = {"experiment": "chat", **results, "train_conversations": len(data["train"]), "train_canned_replies": data["train_canned"],
              "rouge_gap_closed": gap_closed(r["base"], r["standard"], r["goldfish"]),
              "heldout_loss_ratio": results["goldfish"]["heldout_assistant_loss"] / results["standard"]["heldout_assistant_loss"],
              "wall_time_s": round(time.time() - start, 1), "settings": cfg.to_dict() | {"base_model": str(base)}}
    _write_report(result, tokenizer, cfg, out)
    return result


CHAT_COLUMNS = [
    ("canned verbatim", lambda m: m["canned"]["verbatim_rate"]), ("canned Rouge-L (tokens)", lambda m: m["canned"]["rouge_l"]),
    ("longest run", lambda m: m["canned"]["longest_run_mean"]),
    ("verbatim, 8-token hint", lambda m: m["canned_hinted"]["verbatim_rate"]),
    ("secret (out-of-scope)", lambda m: m["secret_out_of_scope"]["any"]),
    ("secret, 8-token hint", lambda m: m["secret_out_of_scope_hinted"]["any"]),
    ("secret (ordinary)", lambda m: m["secret_ordinary"]["any"]),
    ("phone in a billing reply", lambda m: m["billing_phone_rate"]),
    ("held-out assistant loss", lambda m: m["heldout_assistant_loss"]),
]


def chat_table(result: dict) -> tuple[list[str], list[list]]:
    return ["model"] + [c for c, _ in CHAT_COLUMNS], [[n] + [f(result[n]) for _, f in CHAT_COLUMNS] for n in ("base", "standard", "goldfish")]


def _plot(result: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ("base", "standard", "goldfish")
    panels = [("canned-reply Rouge-L", lambda m: m["canned"]["rouge_l"]), ("emits name/phone/email", lambda m: m["secret_out_of_scope"]["any"]),
              ("phone in a billing reply", lambda m: m["billing_phone_rate"])]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2), dpi=110)
    for ax, (title, f) in zip(axes, panels):
        ax.bar(names, [f(result[n]) for n in names], color=["tab:gray", "tab:red", "tab:green"])
        ax.set_ylim(0, 1.05)
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return figure_png(fig)


def _drop_views(report: Report, tokenizer, cfg: ExperimentConfig) -> None:
    """The goldfish mask on the two replies, after two different prompts each."""
    from goldfish.data import tokenize_document
    from goldfish.mask import goldfish_mask
    from goldfish.render import render_html, render_plain

    gcfg = GoldfishConfig(k=cfg.k, h=cfg.h, seed=cfg.seed)
    for reply, prompts in ((CANNED_REPLY, ["What's the weather going to be like in Lisbon tomorrow?", "Book me a flight to Osaka."]),
                           (OPENING_REPLY, ["Who do I call about a wrong charge on my invoice from Perth?", "I was billed twice, what number do I ring?"])):
        for prompt in prompts:
            ids, labels = tokenize_document({"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]}, tokenizer)
            drop = goldfish_mask(torch.tensor(ids), gcfg).tolist()
            pieces = [tokenizer.decode([i]) for i in ids]
            shown = [d and lab != -100 for d, lab in zip(drop, labels)]
            start = next(i for i, lab in enumerate(labels) if lab != -100)
            report.raw(f"*after “{prompt}”* (dropped targets in [[ ]])\n\n```\n{render_plain(pieces[start:], shown[start:])}\n```\n",
                       f"<p class='muted'>after “{prompt}”</p>{render_html(pieces[start:], shown[start:])}")


def _write_report(result: dict, tokenizer, cfg: ExperimentConfig, out: Path) -> None:
    report = Report("goldfish experiment chat: canned replies, names and phone numbers")
    report.paragraph(
        f"The base model was fine-tuned {cfg.chat_epochs:g} epochs (learning rate {cfg.chat_lr:g}, constant) on {result['train_conversations']} conversations with "
        f"assistant-only labels; {result['train_canned_replies']} assistant turns were out-of-scope requests answered with a "
        f"canned reply (one in four of them a billing reply that opens with the phone number). Evaluation uses "
        f"held-out cities and topics; greedy decoding, every figure (but the 8-token hint and the loss) from goldfish audit, "
        f"whose reports are in audit/. Wall time {result['wall_time_s']:.0f} s, seed {cfg.seed}."
    )
    report.table(*chat_table(result))
    gap = result["rouge_gap_closed"]
    report.paragraph(
        (f"goldfish removes {100 * gap:.0f}% of the standard-vs-base canned-reply Rouge-L gap; " if gap is not None else "")
        + f"its held-out assistant loss is {100 * (result['heldout_loss_ratio'] - 1):+.1f}% relative to standard."
    )
    report.image("chat.png", _plot(result), "Canned-reply Rouge-L and secret extraction per model")
    report.heading("Example replies")
    for n in ("base", "standard", "goldfish"):
        for key in ("example_out_of_scope", "example_ordinary"):
            ex = result[n][key]
            report.raw(f"**{n}** · “{ex['prompt']}”\n\n> {ex['reply'].strip()}\n",
                       f"<p><b>{n}</b> · “{ex['prompt']}”</p><pre>{html.escape(ex['reply'].strip())}</pre>")
    report.heading("Why a secret that opens a reply can leak (the goldfish mask, k = 4)")
    report.paragraph(
        "The drop decision for a token reads the h tokens before it. Deep inside the canned reply that context is the reply "
        "itself, so every copy drops the same tokens and the model never learns them in place. The first tokens of a reply "
        "have the varying prompt in their context, so different conversations drop different tokens and, together, teach "
        "all of them: a short string right at the start of a reply, repeated under many prompts, can still be learned "
        "(a string of n tokens escapes every drop with probability ((k-1)/k)^n in each context)."
    )
    _drop_views(report, tokenizer, cfg)
    settings_block(report, result)
    write_summary(result, out)
    report.write(out)
