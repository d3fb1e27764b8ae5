"""The ``goldfish`` command. Each subcommand is a thin recipe over the library; flags mirror the
Python argument names."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from goldfish.config import STRATEGIES, GoldfishConfig


def add_goldfish_flags(p: argparse.ArgumentParser, default_strategy: str = "hash") -> None:
    g = p.add_argument_group("goldfish mask")
    g.add_argument("--strategy", choices=STRATEGIES, default=default_strategy, help="drop rule (default: %(default)s)")
    g.add_argument("--k", type=float, default=4, help="drop 1 in k targets (default: %(default)s)")
    g.add_argument("--h", type=int, default=13, help="context width of the hash (default: %(default)s)")
    g.add_argument("--seed", type=int, default=0, help="hash / generator seed (default: %(default)s)")


def config_from_args(args) -> GoldfishConfig:
    k = int(args.k) if float(args.k).is_integer() else args.k
    return GoldfishConfig(strategy=args.strategy, k=k, h=args.h, seed=args.seed)


def _mask_text(args) -> str:
    given = [x is not None for x in (args.text, args.file, args.embedded)]
    if sum(given) != 1:
        raise ValueError("give exactly one of TEXT, --file PATH or --embedded PART:INDEX")
    if args.text is not None:
        return args.text
    if args.file is not None:
        return Path(args.file).read_text(encoding="utf-8")
    from goldfish.experiments.corpus import corpus_part

    part, _, index = args.embedded.partition(":")
    docs = corpus_part(part)
    try:
        return docs[int(index or 0)]["text"]
    except (ValueError, IndexError):
        raise ValueError(f"--embedded wants PART:INDEX with INDEX in 0..{len(docs) - 1}, got {args.embedded!r}")


def cmd_mask(args) -> int:
    from rich.console import Console

    from goldfish.mask import goldfish_mask
    from goldfish.render import render_plain, render_rich, token_pieces

    cfg = config_from_args(args)
    text = _mask_text(args)
    tokenizer = _load_tokenizer(args.tokenizer)
    ids, pieces = token_pieces(tokenizer, text, args.max_tokens)
    if not ids:
        raise ValueError("the text has no tokens")
    import numpy as np

    dropped = goldfish_mask(np.asarray(ids, dtype=np.int64), cfg).tolist()
    console = Console(highlight=False, soft_wrap=True)
    if console.is_terminal and not args.plain:
        console.print(render_rich(pieces, dropped))
        legend = "[bold white on red]dropped[/] targets are left out of the loss"
    else:
        print(render_plain(pieces, dropped))
        legend = "[[dropped]] targets are left out of the loss"
    n = sum(dropped)
    rate = f"dropped {n} of {len(ids)} targets ({100 * n / len(ids):.1f}%; expected {100 / cfg.k:.1f}%)"
    settings = f"strategy={cfg.strategy} k={cfg.k} h={cfg.h} seed={cfg.seed}"
    if console.is_terminal and not args.plain:
        console.print(f"\n{rate}, {settings}; {legend}")
    else:
        print(f"\n{rate}, {settings}; {legend}")
    return 0


def _load_tokenizer(path):
    from transformers import AutoTokenizer

    if path is None:
        from goldfish.experiments.tiny import load_embedded_tokenizer

        return load_embedded_tokenizer()
    if not Path(path, "tokenizer_config.json").exists() and not Path(path, "tokenizer.json").exists():
        raise ValueError(f"{path} is not a HF tokenizer folder (no tokenizer.json / tokenizer_config.json)")
    return AutoTokenizer.from_pretrained(path)


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
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"goldfish {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
