"""The ``goldfish`` command. Each subcommand is a thin recipe over the library; flags mirror the
Python argument names."""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

from goldfish.config import STRATEGIES, GoldfishConfig


def add_goldfish_flags(p: argparse.ArgumentParser, default_strategy: str = "hash") -> None:
    g = p.add_argument_group("goldfish mask")
    g.add_argument("--strategy", choices=STRATEGIES, default=default_strategy, help="drop rule (default: %(default)s)")
    g.add_argument("--k", type=float, default=4, help="drop 1 in k targets (default: %(default)s)")
    g.add_argument("--h", type=int, default=13, help="context width of the hash (default: %(default)s)")
    g.add_argument("--seed", type=int, default=0, help="hash / generator seed (default: %(default)s)")
    g.add_argument("--protect", action="append", default=[],
                   help="protect secrets: 'builtin' (emails, phones, URLs, IPv4, cards, API keys) or a file, one literal "
                        "or re:REGEX a line; repeatable. Their drops depend on their own tokens only (goldfish-protect-v1)")
    g.add_argument("--protect-k", type=float, default=GoldfishConfig.protect_k,
                   help="drop 1 in protect-k targets inside protected spans; 1 drops them all (default: %(default)s)")


def _number(x: float):
    return int(x) if float(x).is_integer() else x


def config_from_args(args) -> GoldfishConfig:
    return GoldfishConfig(strategy=args.strategy, k=_number(args.k), h=args.h, seed=args.seed, protect_k=_number(args.protect_k))


def _mask_text(args) -> str:
    given = [x is not None for x in (args.text, args.file, args.embedded)]
    if sum(given) != 1:
        raise ValueError("give exactly one of TEXT, --file PATH or --embedded PART:INDEX")
    if args.text is not None:
        return args.text
    if args.file is not None:
        return Path(args.file).read_text(encoding="utf-8")
    from goldfish.embedded.corpus import corpus_part

    part, _, index = args.embedded.partition(":")
    docs = corpus_part(part)
    try:
        return docs[int(index or 0)]["text"]
    except (ValueError, IndexError):
        raise ValueError(f"--embedded wants PART:INDEX with INDEX in 0..{len(docs) - 1}, got {args.embedded!r}") from None


def cmd_mask(args) -> int:
    import numpy as np
    from rich.console import Console

    from goldfish.data.tokenize import marker_for
    from goldfish.mask import goldfish_mask
    from goldfish.render import DROP_STYLE, PROTECT_STYLE, render_plain, render_rich, token_pieces
    from goldfish.secrets import load_secrets

    cfg = config_from_args(args)
    secrets = load_secrets(args.protect)
    text = _mask_text(args)
    tokenizer = _load_tokenizer(args.tokenizer)
    ids, pieces, offsets = token_pieces(tokenizer, text, args.max_tokens)
    if not ids:
        raise ValueError("the text has no tokens")
    marker = marker_for(text, offsets, secrets) if secrets else None
    dropped = goldfish_mask(np.asarray(ids, dtype=np.int64), cfg, protected=None if marker is None else np.asarray(marker)).tolist()
    console = Console(highlight=False, soft_wrap=True)
    colour = console.is_terminal and not args.plain
    n = sum(dropped)
    summary = (f"\ndropped {n} of {len(ids)} targets ({100 * n / len(ids):.1f}%; expected {100 / cfg.k:.1f}%), "
               f"strategy={cfg.strategy} k={cfg.k} h={cfg.h} seed={cfg.seed}")
    if marker is not None:
        inside = [d for d, m in zip(dropped, marker) if m]
        summary += (f"; protected {len(inside)} tokens in {len(set(marker) - {0})} spans, {sum(inside)} dropped "
                    f"(protect_k={cfg.protect_k})")
    if colour:
        console.print(render_rich(pieces, dropped, marker))
        console.print(summary + f"; [{DROP_STYLE}]dropped[/] targets are left out of the loss"
                      + (f", [{PROTECT_STYLE}]protected[/] spans follow goldfish-protect-v1" if marker else ""))
    else:
        print(render_plain(pieces, dropped, marker))
        print(summary + "; [[dropped]] targets are left out of the loss" + ("; {{protected spans}}" if marker else ""))
    return 0


def _load_tokenizer(path):
    from transformers import AutoTokenizer

    if path is None:
        from goldfish.embedded.tiny import load_embedded_tokenizer

        return load_embedded_tokenizer()
    if not Path(path, "tokenizer_config.json").exists() and not Path(path, "tokenizer.json").exists():
        raise ValueError(f"{path} is not a HF tokenizer folder (no tokenizer.json / tokenizer_config.json)")
    return AutoTokenizer.from_pretrained(path)


def cmd_train(args) -> int:
    from goldfish.train import TrainConfig, train

    cfg = TrainConfig(
        data=args.data, out=args.out, model=args.model, init=args.init, text_field=args.text_field,
        goldfish=config_from_args(args), goldfish_start_step=args.goldfish_start_step, pack=args.pack,
        padding_free=args.padding_free,
        seq_len=args.seq_len, epochs=args.epochs, max_steps=args.max_steps, lr=args.lr,
        batch_size=args.batch_size, grad_accum=args.grad_accum, warmup=args.warmup,
        weight_decay=args.weight_decay, lr_scheduler=args.lr_scheduler, save_steps=args.save_steps,
        logging_steps=args.logging_steps, supervised_logits=not args.full_logits, resume=args.resume,
        overwrite=args.overwrite, sequential=args.sequential, bf16=args.bf16, progress=not args.no_progress,
        assistant_turns=args.assistant_turns, num_proc=args.num_proc, data_cache=args.data_cache, protect=args.protect,
        lora=args.lora, lora_r=args.lora_r,
        lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout, lora_targets=args.lora_targets, merge=args.merge,
    )
    record = train(cfg)
    t = record["tokens_per_epoch"]
    print(
        f"saved {args.out} after {record['global_steps']} steps: train loss {record['train_loss']:.4f}; per epoch "
        f"{t['input_tokens']} input tokens, {t['supervised_targets']} supervised, {t['dropped_targets']} dropped "
        f"({100 * t['drop_rate']:.1f}%)"
        + (f"; {record['protection']['protected_targets']} protected targets, {record['protection']['protected_dropped']} dropped"
           if record.get("protection") else "")
    )
    return 0


def cmd_audit(args) -> int:
    from goldfish.audit import AuditConfig, run_audit
    from goldfish.audit.report import summary_rows

    cfg = AuditConfig(
        models=args.model, names=args.name, data=args.data, out=args.out, suffix_len=args.suffix_len,
        prefix_len=args.prefix_len, batch_size=args.batch_size, non_members=args.non_members,
        reference_model=args.reference_model, beams=args.beam, stop_at_eos=args.stop_at_eos, device=args.device,
        dtype=args.dtype, text_field=args.text_field, max_documents=args.max_documents, progress=not args.no_progress,
        assistant_turns=args.assistant_turns, secrets=args.secrets or [], offsets=args.offsets,
        min_new_tokens=args.min_new_tokens,
    )
    result = run_audit(cfg)
    print_table(*summary_rows(result["models"]))
    for name, s in result["models"].items():
        for score, m in s.get("mia", {}).items():
            if score != "non_members":
                print(f"{name}: MIA {score}: AUC {m['auc']:.3f}, TPR@1%FPR {m['tpr_at_1%_fpr']:.3f}")
        for secret, m in s.get("secrets", {}).items():
            rate = lambda v: "-" if v is None else f"{100 * v:.0f}%"  # noqa: E731
            print(f"{name}: secret {secret!r}: recall {rate(m['recall'])} of {m['turns_with_secret']} turns, spill {rate(m['spill'])}")
    print(f"report: {Path(args.out) / 'report.html'}")
    return 0


def _experiment_config(args):
    from goldfish.experiments.config import load_config

    overrides = {k: getattr(args, k, None) for k in ("out", "model", "seed", "n_docs", "epochs", "strategies", "k", "steps",
                                                      "repeats", "ks", "device", "conversations")}
    if overrides["out"] is None and getattr(args, "name", None):
        overrides["out"] = f"goldfish-{args.name}"
    if getattr(args, "no_progress", False):
        overrides["progress"] = False
    return load_config(args.preset, args.config, **overrides)


def cmd_demo(args) -> int:
    from goldfish.experiments.extreme import run_extreme
    from goldfish.experiments.reporting import run_names, run_table

    result = run_extreme(_experiment_config(args))
    print_table(*run_table(result, run_names(result)))
    if result.get("rouge_gap_closed") is not None:
        print(f"goldfish removes {100 * result['rouge_gap_closed']:.0f}% of the standard-vs-control Rouge-L gap; "
              f"mean longest verbatim run {100 * result['longest_run_ratio']:.0f}% of standard's")
    print(f"wall time {result['wall_time_s']:.0f} s; report: {Path(args.out or result['settings']['out']) / 'report.html'}")
    return 0


def cmd_experiment(args) -> int:
    from goldfish.experiments.reporting import run_names, run_table

    cfg = _experiment_config(args)
    if args.name == "extreme":
        from goldfish.experiments.extreme import run_extreme as run
    elif args.name == "duplicated":
        from goldfish.experiments.duplicated import run_duplicated as run
    elif args.name == "budget":
        from goldfish.experiments.budget import run_budget as run
    else:
        from goldfish.experiments.chat import run_chat as run
    result = run(cfg)
    runs = run_names(result)
    if runs:
        print_table(*run_table(result, runs))
    if args.name == "chat":
        from goldfish.experiments.chat import chat_table

        print_table(*chat_table(result))
    for p in result.get("per_k", []):
        print(f"k={p['k']:g}: Rouge-L {p['rouge_l_mean']:.3f}, longest run {p['longest_run_mean']:.1f} tokens")
    for name, loss in result.get("final_validation_loss", {}).items():
        print(f"{name}: final validation loss {loss:.4f}")
    print(f"wall time {result['wall_time_s']:.0f} s; report: {Path(cfg.out) / 'report.html'}")
    return 0


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def print_table(headers: list[str], rows: list[list]) -> None:
    """A table on the terminal (rich)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(*headers)
    for row in rows:
        table.add_row(*(f"{v:.3f}" if isinstance(v, float) else "-" if v is None else str(v) for v in row))
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # piped: don't squeeze the columns to 80
    console.print(table)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="goldfish", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("mask", help="show which tokens of a text the goldfish mask drops")
    p.add_argument("text", nargs="?", help="text to show (or use --file / --embedded)")
    p.add_argument("--file", help="read the text from a file")
    p.add_argument("--embedded", help="an embedded corpus document, PART:INDEX (e.g. targets:0)")
    p.add_argument("--tokenizer", help="HF tokenizer folder (default: the embedded BPE tokenizer)")
    p.add_argument("--max-tokens", type=int, default=None, help="show only the first N tokens")
    p.add_argument("--plain", action="store_true", help="plain [[markers]] even in a terminal")
    add_goldfish_flags(p)
    p.set_defaults(func=cmd_mask)

    p = sub.add_parser("train", help="train or fine-tune a causal LM with the goldfish loss (HF Trainer)")
    src = p.add_argument_group("model and data")
    src.add_argument("--model", help="local HF model folder (with its tokenizer)")
    src.add_argument("--init", choices=["tiny", "micro"], help="a fresh tiny Llama with the embedded tokenizer")
    src.add_argument("--data", action="append", required=True,
                     help=".jsonl/.json/.parquet/.csv (text, messages, or prompt/completion records), .txt, a folder, "
                          "a save_to_disk dataset, or embedded:PART; repeatable")
    src.add_argument("--text-field", default="text", help="field holding plain text (default: %(default)s)")
    src.add_argument("--assistant-turns", choices=["all", "last"], default="all",
                     help="chats: supervise every assistant turn or only the last (default: %(default)s)")
    src.add_argument("--num-proc", type=int, default=None, help="processes for data preparation (default: 1)")
    src.add_argument("--data-cache", help="folder for prepared (tokenized) data (default: $GOLDFISH_CACHE/prepared)")
    src.add_argument("--seq-len", type=int, default=512, help="tokens a row; longer documents are split (default: %(default)s)")
    src.add_argument("--pack", action="store_true", help="pack documents into full rows (position_ids restart per document)")
    src.add_argument("--padding-free", action="store_true",
                     help="flatten each batch into one row, no padding (position_ids restart per example; same batches "
                          "and loss as padded ones, less compute when lengths vary)")
    add_goldfish_flags(p)
    p.add_argument("--goldfish-start-step", type=int, default=0, help="train with the standard loss before this step")
    t = p.add_argument_group("training")
    t.add_argument("--out", required=True, help="output folder: HF model + goldfish.json + checkpoints + TensorBoard runs/")
    t.add_argument("--epochs", type=float, default=1.0)
    t.add_argument("--max-steps", type=int, default=-1, help="stop after N optimizer steps (overrides --epochs)")
    t.add_argument("--lr", type=float, default=5e-4)
    t.add_argument("--batch-size", type=int, default=8, help="per device")
    t.add_argument("--grad-accum", type=int, default=1)
    t.add_argument("--warmup", type=float, default=0.0, help="warm-up steps, or a ratio of all steps if < 1")
    t.add_argument("--weight-decay", type=float, default=0.0)
    t.add_argument("--lr-scheduler", default="linear", help="any HF scheduler name (default: %(default)s)")
    t.add_argument("--save-steps", type=int, default=500, help="checkpoint every N steps (0: none)")
    t.add_argument("--logging-steps", type=int, default=10)
    t.add_argument("--resume", nargs="?", const="latest", help="resume from a checkpoint folder (default: the latest in --out)")
    t.add_argument("--overwrite", action="store_true", help="allow a non-empty --out")
    t.add_argument("--full-logits", action="store_true", help="build full (B, T, V) logits instead of only supervised ones")
    t.add_argument("--sequential", action="store_true", help="iterate the data in order (no shuffling)")
    t.add_argument("--bf16", action="store_true", help="bf16 mixed precision")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    lora = p.add_argument_group("LoRA (needs peft: pip install 'goldfish[peft]')")
    lora.add_argument("--lora", action="store_true", help="train a LoRA adapter instead of all weights")
    lora.add_argument("--lora-r", type=int, default=16, help="rank (default: %(default)s)")
    lora.add_argument("--lora-alpha", type=float, default=32, help="scaling alpha (default: %(default)s)")
    lora.add_argument("--lora-dropout", type=float, default=0.05, help="(default: %(default)s)")
    lora.add_argument("--lora-targets", nargs="+", default=["all-linear"],
                      help="module names to adapt, or all-linear (default: %(default)s)")
    lora.add_argument("--merge", action="store_true", help="also write the merged model to OUT/merged")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("audit", help="measure memorization: extraction and membership inference")
    p.add_argument("--model", action="append", required=True, help="local HF model folder; repeat to compare models")
    p.add_argument("--name", action="append", help="display name for each --model, in order")
    p.add_argument("--data", required=True,
                   help="documents (text) or chats (messages, prompt/completion) to test: a file, folder, save_to_disk or embedded:PART")
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--suffix-len", type=int, default=50, help="tokens to extract (default: %(default)s)")
    p.add_argument("--prefix-len", type=int, default=None, help="prompt tokens (default: all before the suffix)")
    p.add_argument("--offsets", type=_int_list, default=None,
                   help="comma-separated token offsets where prefixes start (e.g. 0,16,32; needs --prefix-len): metrics per offset")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--non-members", help="documents the model never saw: runs membership inference")
    p.add_argument("--reference-model", help="reference model for the loss-difference MIA score")
    p.add_argument("--beam", type=int, default=1, help="beam search width (1 = greedy)")
    p.add_argument("--stop-at-eos", action="store_true", help="stop a generation at EOS")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto")
    p.add_argument("--text-field", default="text")
    p.add_argument("--assistant-turns", choices=["all", "last"], default="all", help="chats: which assistant turns to test")
    p.add_argument("--min-new-tokens", type=int, default=0,
                   help="chats: decode at least N tokens a turn, up to its end-of-turn token (the secret scan reads them; "
                        "the metrics read as many as the true reply has)")
    p.add_argument("--secrets", action="append",
                   help="chats: 'builtin' (emails, phones, URLs, IPv4, cards, API keys) or a file, one literal or re:REGEX a line; repeatable")
    p.add_argument("--max-documents", type=int, default=None)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("demo", help="the paper's extreme setting on the embedded data: standard memorizes, goldfish does not")
    add_experiment_flags(p, default_out="goldfish-demo")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("experiment", help="reproduce the paper's experiments: extreme, duplicated, budget, chat")
    p.add_argument("name", choices=["extreme", "duplicated", "budget", "chat"])
    add_experiment_flags(p, default_out="goldfish-NAME")
    p.add_argument("--steps", type=int, help="pretraining steps (duplicated, budget)")
    p.add_argument("--repeats", type=int, help="times each target is inserted (duplicated)")
    p.add_argument("--ks", type=float, nargs="+", help="goldfish k values (duplicated)")
    p.add_argument("--conversations", type=int, help="training conversations (chat)")
    p.set_defaults(func=cmd_experiment)
    return parser


def add_experiment_flags(p: argparse.ArgumentParser, default_out: str) -> None:
    p.add_argument("--config", help="TOML file with ExperimentConfig keys (flags override it)")
    p.add_argument("--preset", default="default", choices=["default", "quick", "test"])
    p.add_argument("--out", default=None, help=f"output folder (default: {default_out})")
    p.add_argument("--model", help="base model: any local HF causal LM folder (default: the cached tiny base)")
    p.add_argument("--seed", type=int)
    p.add_argument("--n-docs", dest="n_docs", type=int, help="documents to train on")
    p.add_argument("--epochs", type=float)
    p.add_argument("--strategies", nargs="+", choices=["none", "hash", "static", "random", "paper-table"],
                   help="runs to compare (none = the standard loss)")
    p.add_argument("--k", type=float)
    p.add_argument("--device")
    p.add_argument("--no-progress", action="store_true")


def _log_to_stderr() -> None:
    """The library logs to the "goldfish" logger; the CLI shows its INFO lines on stderr."""
    import logging

    logger = logging.getLogger("goldfish")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("goldfish: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    _log_to_stderr()
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"goldfish {args.command}: error: {e}", file=sys.stderr)
        return 2
    finally:
        _close_process_group()


def _close_process_group() -> None:
    """Destroy the torch.distributed group a run under torchrun/accelerate opened, and join gloo's threads.

    Trainer never does this. Left to interpreter exit, a gloo worker thread can still be releasing the
    last collective's tensors while Python finalizes, and the rank aborts ("terminate called without
    an active exception", SIGABRT) after its work is done. destroy_process_group drops the registry's
    reference; collecting the garbage (a DDP wrapper in a reference cycle) drops the last one, and the
    group's destructor then drains its work queue and joins the threads.
    """
    dist = sys.modules.get("torch.distributed")  # never import torch just to find nothing to close
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
        gc.collect()


if __name__ == "__main__":
    sys.exit(main())
