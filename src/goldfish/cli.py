"""The ``goldfish`` command: thin recipes over the library.

Every flag is generated from a config dataclass (``goldfish.arguments``): ``goldfish train`` from
goldfish's groups and HF ``TrainingArguments`` (``goldfish.train_config``), ``audit`` from
``AuditConfig``, ``mask`` from ``GoldfishConfig``, each experiment from its recipe's config. Flags
mirror the Python names; every bad flag or setting reads ``goldfish COMMAND: error: ...`` (exit 2).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path

from goldfish.distributed import close_process_group, rank_label, world_size

COMMANDS = {
    "train": "train or fine-tune a causal LM with the goldfish loss (HF Trainer)",
    "audit": "measure memorization: extraction, chat turns, secrets, membership inference",
    "eval": "score models on downstream benchmarks (lm-evaluation-harness; embedded tasks by default)",
    "sweep": "train one model per k (and the standard loss), audit them together, and name the largest k that meets a "
             "memorization target: the k frontier",
    "mask": "show which tokens of a text the goldfish mask drops",
    "plot": "draw the held-out loss of training runs against input and supervised tokens (the paper's Fig. 5)",
    "demo": "the paper's extreme setting on the embedded data: standard memorizes, goldfish does not",
    "experiment": "reproduce the paper's experiments on the embedded data",
}


def _version() -> str:
    from goldfish import __version__

    return __version__


def print_line(line) -> None:
    """A string, or a table given as (headers, rows), on the terminal (rich)."""
    if isinstance(line, str):
        print(line)
        return
    from rich.console import Console
    from rich.table import Table

    headers, rows = line
    table = Table(*headers)
    for row in rows:
        table.add_row(*(f"{v:.3f}" if isinstance(v, float) else "-" if v is None else str(v) for v in row))
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # piped: don't squeeze the columns to 80
    console.print(table)


# ---- goldfish mask ----

def _mask_parser(prog: str):
    from goldfish.arguments import ArgumentParser
    from goldfish.config import GoldfishConfig
    from goldfish.models import trust_remote_code_field

    @dataclass
    class MaskArguments:
        """What ``goldfish mask`` shows (the mask itself: the ``GoldfishConfig`` flags)."""

        file: str | None = field(default=None, metadata={"help": "read the text from a file"})
        embedded: str | None = field(default=None, metadata={"help": "an embedded corpus document, PART:INDEX (e.g. targets:0)"})
        tokenizer: str | None = field(default=None, metadata={"help": "HF tokenizer folder (None: the embedded BPE tokenizer)"})
        max_tokens: int | None = field(default=None, metadata={"help": "show only the first N tokens"})
        trust_remote_code: bool = trust_remote_code_field()
        plain: bool = field(default=False, metadata={"help": "plain [[markers]] even in a terminal"})

    parser = ArgumentParser([MaskArguments, GoldfishConfig], aliases={"--seed": "--goldfish_seed"}, config=False, prog=prog,
                            description="Show which tokens of a text the goldfish mask drops (and which are protected).")
    # one value a --protect, so `--protect builtin "TEXT"` leaves TEXT a text (repeat the flag for more)
    parser._actions_by_dest["protect"].nargs = None
    parser._actions_by_dest["near_duplicates"].help = (
        "align: the TEXTs are masked by goldfish-align-v1 as one training set (each text all supervised) and shown one "
        "under another: near-duplicates drop the same tokens where they agree; off: each text by itself")
    parser.add_argument("text", nargs="*", help="the text(s) to show (or --file / --embedded)")
    return parser


def _mask_texts(args, cfg, texts: list[str]) -> list[str]:
    given = [bool(texts), args.file is not None, args.embedded is not None]
    if sum(given) != 1:
        raise ValueError("give exactly one of TEXT [TEXT ...], --file PATH or --embedded PART:INDEX")
    if cfg.near_duplicates == "align" and len(texts) < 2:
        raise ValueError("--near-duplicates align shows the rule on near-duplicates: give two or more TEXTs")
    if texts:
        return texts
    if args.file is not None:
        return [Path(args.file).read_text(encoding="utf-8")]
    from goldfish.embedded.corpus import corpus_part

    part, _, index = args.embedded.partition(":")
    docs = corpus_part(part)
    try:
        return [docs[int(index or 0)]["text"]]
    except (ValueError, IndexError):
        raise ValueError(f"--embedded wants PART:INDEX with INDEX in 0..{len(docs) - 1}, got {args.embedded!r}") from None


def _load_tokenizer(path, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    from goldfish.models import from_pretrained

    if path is None:
        from goldfish.embedded.tiny import load_embedded_tokenizer

        return load_embedded_tokenizer()
    if not Path(path, "tokenizer_config.json").exists() and not Path(path, "tokenizer.json").exists():
        raise ValueError(f"{path} is not a HF tokenizer folder (no tokenizer.json / tokenizer_config.json)")
    return from_pretrained(AutoTokenizer, path, "--tokenizer", trust_remote_code)


def cmd_mask(argv: list[str], prog: str) -> int:
    from rich.console import Console

    from goldfish.data.tokenize import marker_for
    from goldfish.render import DROP_STYLE, PROTECT_STYLE, mask_view, render_plain, render_rich, token_pieces
    from goldfish.secrets import load_secrets

    (args, cfg), extra = _mask_parser(prog).parse(argv)
    secrets = load_secrets(list(cfg.protect))
    texts = _mask_texts(args, cfg, extra.text)
    tokenizer = _load_tokenizer(args.tokenizer, args.trust_remote_code)
    shown = [token_pieces(tokenizer, text, args.max_tokens) for text in texts]
    if not all(ids for ids, _, _ in shown):
        raise ValueError("the text has no tokens")
    markers = [marker_for(text, offsets, secrets) if secrets else None for text, (_, _, offsets) in zip(texts, shown)]
    view = mask_view([ids for ids, _, _ in shown], cfg, markers)
    aligned = view.aligned
    console = Console(highlight=False, soft_wrap=True)
    colour = console.is_terminal and not args.plain
    for n, ((ids, pieces, _), marker, dropped, column) in enumerate(zip(shown, markers, view.dropped, view.columns)):
        d = sum(dropped)
        summary = (f"\ndropped {d} of {len(ids)} targets ({100 * d / len(ids):.1f}%; expected {100 / cfg.k:.1f}%), "
                   f"strategy={cfg.strategy} k={cfg.k:g} h={cfg.h} seed={cfg.seed}")
        if marker is not None:
            inside = [x for x, m in zip(dropped, marker) if m]
            summary += (f"; protected {len(inside)} tokens in {len(set(marker) - {0})} spans, {sum(inside)} dropped "
                        f"(protect_k={cfg.protect_k:g})")
        if column is not None:
            summary += (f"; goldfish-align-v1: {int((column >= 0).sum())} targets take their cluster representative's decisions"
                        if (column >= 0).any() else "; goldfish-align-v1: its own decisions (a representative, or in no cluster)")
        if len(texts) > 1:
            print(f"text {n + 1}:")
        if colour:
            console.print(render_rich(pieces, dropped, marker))
            console.print(summary + f"; [{DROP_STYLE}]dropped[/] targets are left out of the loss"
                          + (f", [{PROTECT_STYLE}]protected[/] spans follow goldfish-protect-v1" if marker else ""))
        else:
            print(render_plain(pieces, dropped, marker))
            print(summary + "; [[dropped]] targets are left out of the loss" + ("; {{protected spans}}" if marker else ""))
    if aligned is not None:
        print(f"\ngoldfish-align-v1 on these {len(texts)} texts: {aligned.clusters} cluster(s) holding {aligned.passages} of them, "
              f"{aligned.aligned_targets} aligned targets (the same drops as the representative's tokens they align to)")
    return 0


# ---- goldfish train ----

def cmd_train(argv: list[str], prog: str) -> int:
    from goldfish.train import near_duplicates_line, train
    from goldfish.train_config import TrainConfig

    record = train(TrainConfig.from_args(argv, prog))
    t = record["tokens_per_epoch"]
    print(
        f"saved {record['settings']['output_dir']} after {record['global_steps']} steps: train loss {record['train_loss']:.4f}; "
        f"per epoch {t['input_tokens']} input tokens, {t['supervised_targets']} supervised, {t['dropped_targets']} dropped "
        f"({100 * t['drop_rate']:.1f}%)"
        + (f"; {record['protection']['protected_targets']} protected targets, {record['protection']['protected_dropped']} dropped"
           if record.get("protection") else "")
        + (f"; near-duplicates: {near_duplicates_line(record['near_duplicates'])}" if record.get("near_duplicates") else "")
    )
    return 0


# ---- goldfish sweep ----

def cmd_sweep(argv: list[str], prog: str) -> int:
    from goldfish.sweep import frontier_rows, parse_sweep, recommendation_lines, run_sweep

    train, args = parse_sweep(argv, prog)
    summary = run_sweep(train, args)
    print_line(frontier_rows(summary))
    for line in recommendation_lines(summary):
        print(line)
    if summary["benchmarks_verdict"]:
        print(f"benchmarks: {summary['benchmarks_verdict']}")
    k = summary["recommended_k"]
    print(f"recommended k: {'none meets the target' if k is None else f'{k:g}'}")
    print(f"report: {Path(summary['settings']['out']) / 'report.html'}; frontier: {Path(summary['settings']['out']) / 'frontier.png'}")
    return 0


# ---- goldfish audit ----

def _audit_aliases() -> dict[str, str]:
    from goldfish.models import MODELS_ALIASES

    return MODELS_ALIASES | {"--beam": "--beams"}


def audit_parser(prog: str = "goldfish audit"):
    from goldfish.arguments import ArgumentParser
    from goldfish.audit import AuditConfig

    return ArgumentParser([AuditConfig], aliases=_audit_aliases(), prog=prog,
                          description="Measure memorization of local HF causal LMs: extraction (text documents or "
                                      "chat turns), secrets, membership inference.")


def cmd_audit(argv: list[str], prog: str) -> int:
    from goldfish.audit import run_audit
    from goldfish.audit.report import (
        both_halves_rows,
        extraction_probability_rows,
        sampled_rows,
        summary_rows,
        tpr_cell,
        verdict_lines,
    )
    from goldfish.report import with_interval

    (cfg,), _ = audit_parser(prog).parse(argv)
    if cfg.out is None:
        raise ValueError("give the report folder: --out DIR")
    result = run_audit(cfg)
    print_line(both_halves_rows(result))
    for line in verdict_lines(result):
        print(line)
    print_line(summary_rows(result["models"]))
    if any("sampled" in s for s in result["models"].values()):
        print_line(sampled_rows(result["models"]))
    if any("extraction_probability" in s for s in result["models"].values()):
        print_line(extraction_probability_rows(result["models"]))
    for name, s in result["models"].items():
        for score, m in s.get("mia", {}).items():
            if score not in ("non_members", "ngram_overlap"):
                print(f"{name}: MIA {score}: AUC {with_interval(m['auc'], m['auc_ci'])}, TPR@1%FPR {tpr_cell(m, 0.01)}")
        for secret, m in s.get("secrets", {}).items():
            rate = lambda v: "-" if v is None else f"{100 * v:.0f}%"  # noqa: E731
            print(f"{name}: secret {secret!r}: recall {rate(m['recall'])} of {m['turns_with_secret']} turns, spill {rate(m['spill'])}")
            if secret in s.get("sampled", {}).get("secrets", {}):
                x = s["sampled"]["secrets"][secret]
                print(f"{name}: secret {secret!r}, {s['sampled']['samples']} samples: recall {rate(x['recall_any'])} in any, "
                      f"{rate(x['recall_share'])} of all samples; spill {rate(x['spill_any'])} in any")
    print(f"report: {Path(cfg.out) / 'report.html'}")
    return 0


# ---- goldfish eval ----

def eval_parser(prog: str = "goldfish eval"):
    from goldfish.arguments import ArgumentParser
    from goldfish.eval import EvalConfig
    from goldfish.models import MODELS_ALIASES

    return ArgumentParser([EvalConfig], aliases=MODELS_ALIASES, prog=prog,
                          description="Score models on lm-evaluation-harness tasks (offline), with their differences to a "
                                      "baseline model.")


def cmd_eval(argv: list[str], prog: str) -> int:
    from goldfish.eval import run_eval, score_rows, verdict_line

    (cfg,), _ = eval_parser(prog).parse(argv)
    if cfg.out is None:
        raise ValueError("give the report folder: --out DIR")
    result = run_eval(cfg)
    print_line(score_rows(result))
    print(f"verdict: {verdict_line(result)}")
    print(f"report: {Path(cfg.out) / 'report.html'}")
    return 0


# ---- goldfish plot ----

def _plot_parser(prog: str):
    from goldfish.arguments import ArgumentParser

    @dataclass
    class PlotArguments:
        """What ``goldfish plot`` draws: the eval history in each run's goldfish.json (``--eval-data``)."""

        out: str = field(default="eval_loss.png", metadata={"help": "the PNG to write"})
        names: list[str] | None = field(default=None, metadata={"repeatable": True, "help": "a label per run, in order"})

    parser = ArgumentParser([PlotArguments], aliases={"--name": "--names"}, config=False, prog=prog,
                            description="Draw the eval loss of goldfish train runs against input tokens and against "
                                        "supervised tokens (the paper's Fig. 5 view).")
    parser.add_argument("runs", nargs="+", metavar="RUN", help="a goldfish train --out folder trained with --eval-data")
    return parser


def cmd_plot(argv: list[str], prog: str) -> int:
    import json

    from goldfish.cache import write_bytes_atomic
    from goldfish.models import display_names
    from goldfish.report import loss_curves_png

    (args,), extra = _plot_parser(prog).parse(argv)
    curves = {}
    for run, name in zip(extra.runs, display_names(extra.runs, args.names)):
        record = Path(run) / "goldfish.json"
        if not record.is_file():
            raise ValueError(f"{run}: no goldfish.json (not a goldfish train --out folder, or the run did not finish)")
        history = json.loads(record.read_text()).get("eval")
        if not history:
            raise ValueError(f"{run}: goldfish.json holds no eval history; train with --eval-data FILE (and --eval-steps N)")
        curves[name] = history
    write_bytes_atomic(Path(args.out), loss_curves_png(curves))
    print(f"wrote {args.out}: eval loss against input and supervised tokens for {', '.join(curves)}")
    return 0


# ---- goldfish demo / experiment ----

def experiment_parser(name: str, prog: str):
    """The parser of one recipe: its config dataclass, its presets, ``--config``."""
    from goldfish.arguments import ArgumentParser
    from goldfish.experiments import RECIPES

    config = RECIPES[name].load().CONFIG
    return ArgumentParser([config], presets=config.PRESETS, prog=prog, description=RECIPES[name].help)


EXPERIMENT_MARKER = ".goldfish-experiment"  # in an experiment's --out: a previous run's folder, replaced by the next


def run_experiment(name: str, argv: list[str], prog: str, default_out: str) -> int:
    from goldfish.cache import claim_out_folder
    from goldfish.experiments import RECIPES

    from goldfish.experiments.reporting import closing_line
    from goldfish.experiments.seeds import headline_rows, run_seeds

    recipe = RECIPES[name].load()
    (cfg,), _ = experiment_parser(name, prog).parse(argv)
    if cfg.out is None:
        cfg = dataclasses.replace(cfg, out=default_out)
    if cfg.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {cfg.seeds}")
    claim_out_folder(cfg.out, EXPERIMENT_MARKER, f"goldfish experiment {name}")
    if cfg.seeds == 1:
        lines = recipe.lines(recipe.run(cfg))
    else:
        result = run_seeds(recipe, cfg)
        lines = [headline_rows(result, recipe), closing_line(result)]
    for line in lines:
        print_line(line)
    return 0


def cmd_demo(argv: list[str], prog: str) -> int:
    return run_experiment("extreme", argv, prog, "goldfish-demo")


def cmd_experiment(argv: list[str], prog: str) -> int:
    from goldfish.experiments import RECIPES

    if not argv or argv[0] not in RECIPES:
        parser = argparse.ArgumentParser(prog=prog, description=COMMANDS["experiment"])
        names = parser.add_subparsers(dest="name", required=True, metavar="NAME")
        for recipe in RECIPES.values():
            names.add_parser(recipe.name, help=recipe.help)
        parser.parse_args(argv[:1])  # --help, or an error naming the recipes
    name = argv[0]
    return run_experiment(name, argv[1:], f"{prog} {name}", f"goldfish-{name}")


HANDLERS = {"train": cmd_train, "audit": cmd_audit, "sweep": cmd_sweep, "eval": cmd_eval, "mask": cmd_mask, "plot": cmd_plot, "demo": cmd_demo,
            "experiment": cmd_experiment}


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="goldfish", description="Train causal LMs without verbatim memorization (the "
                                                                   "goldfish loss), and audit that they did not.")
    parser.add_argument("--version", action="version", version=f"goldfish {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _log_to_stderr() -> None:
    """The library logs to the "goldfish" logger; the CLI shows its INFO lines on stderr."""
    import logging

    class StderrHandler(logging.StreamHandler):
        """Writes to ``sys.stderr`` as it is at each record (as logging's own last-resort handler does),
        not as it was when the handler was made: a caller that swaps stderr (pytest's capture, a
        notebook) never leaves the logger writing into a closed stream."""

        stream = property(lambda self: sys.stderr, lambda self, value: None)

    logger = logging.getLogger("goldfish")
    if not logger.handlers:
        handler = StderrHandler()
        handler.setFormatter(logging.Formatter("goldfish: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def main(argv=None) -> int:
    """Run ``goldfish ARGV``; returns the exit status (2 for a bad flag or setting, after its one-line error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if not argv or argv[0] not in HANDLERS:
            _top_parser().parse_args(argv)  # --help, --version, or an error naming the commands
            return 2
        command, prog = argv[0], f"goldfish {argv[0]}"
        _log_to_stderr()
        try:
            return HANDLERS[command](argv[1:], prog)
        except (ValueError, FileNotFoundError) as e:
            print(f"{prog}: error: {rank_label()}{e}", file=sys.stderr)
            return 2
        except RuntimeError as e:
            if (message := _collective_failure(e)) is None:
                raise
            print(f"{prog}: error: {message}", file=sys.stderr)
            return 1
        finally:
            close_process_group()
    except SystemExit as e:  # argparse: --help / --version (0) or a usage error (2), already printed
        return e.code if isinstance(e.code, int) else 2


def _collective_failure(e: BaseException) -> str | None:
    """The one-line error for a collective with the other ranks that failed or timed out, else None."""
    dist = sys.modules.get("torch.distributed")
    if world_size() <= 1 or dist is None or not (isinstance(e, getattr(dist, "DistError", ())) or "gloo" in str(e)):
        return None
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return (f"{rank_label()}a collective with the other ranks failed ({first}): a peer rank died or stopped answering; "
            f"collectives wait at most --ddp-timeout seconds")


if __name__ == "__main__":
    sys.exit(main())
