"""`GoldfishConfig`: the goldfish mask rule — which targets the goldfish loss drops — validated on creation.

It is the one place of every mask setting: ``goldfish train``'s "goldfish mask" flags, ``--config``
keys, the resolved ``goldfish_config.yaml``, the ``--resume`` check and ``goldfish.json`` are all
generated from its fields (``goldfish.arguments``); a field's ``metadata["flag"]`` is its flag and
settings name where that differs from the field's (``seed`` is ``--goldfish-seed``, apart from the
training seed), ``None`` for a field that is no command-line setting.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Literal

STRATEGIES = ("hash", "static", "random", "paper-table", "none")
NEAR_DUPLICATES = ("off", "align")


def _number(value: float) -> float:
    """A whole float as an int (``--k 4`` parses as 4.0; records read ``k: 4``), anything else as given."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class GoldfishConfig:
    """The goldfish mask rule.

    strategy: "hash" (default: drop a target iff the hash of its h-token context falls in the lowest
        1/k of the 32-bit range), "static" (every k-th supervised target of a document), "random"
        (probability 1/k, fresh draws every call), "paper-table" (the paper code's table rule) or
        "none" (drop nothing: the standard loss).
    k: drop rate is 1/k; any finite real >= 2 (non-integer k gives rate 1/k exactly for hash/static).
    h: context width of the hash (the h tokens before the target; "paper-table": the window of h
        ids ending at the target).
    seed: 32-bit seed mixed into the hash (hash) or the generator (random).
    ignore_index: label value meaning "not supervised" (HF convention: -100).
    protect_k: drop rate 1/protect_k inside protected spans (rule goldfish-protect-v1,
        ``goldfish.protect``); any finite real >= 1 (1 drops every protected target). Used only
        where a protection marker is given.
    protect: the secrets whose spans are protected when data is prepared: ``builtin`` or files of one
        secret a line (``goldfish.secrets``); the mask itself reads the markers they give.
    near_duplicates: "align": data preparation gives near-duplicate passages their representative's
        hashes (goldfish-align-v1, ``goldfish.align``; needs strategy "hash"); "off": hash-v1 alone.
    """

    _argument_group_name = "goldfish mask"  # its heading in the --help of goldfish train and mask
    strategy: Literal[STRATEGIES] = field(default="hash", metadata={
        "help": "drop rule: hash (the goldfish hash), static, random, paper-table, none (the standard loss)"})
    k: float = field(default=4, metadata={"help": "drop 1 in k supervised targets (k >= 2)"})
    h: int = field(default=13, metadata={"help": "context width of the hash: the h tokens before a target"})
    seed: int = field(default=0, metadata={"flag": "goldfish_seed", "help": "seed of the goldfish hash (and of the random "
                                                                           "strategy's draws)"})
    ignore_index: int = field(default=-100, metadata={"flag": None, "help": "label value meaning 'not supervised'"})
    protect_k: float = field(default=2, metadata={
        "help": "drop 1 in protect_k targets inside protected spans; 1 drops them all"})
    protect: tuple[str, ...] = field(default=(), metadata={
        "repeatable": True,
        "help": "protect secrets: 'builtin' (emails, phones, URLs, IPv4, cards, API keys) or a file with one literal or "
                "re:REGEX a line; repeatable"})
    near_duplicates: Literal[NEAR_DUPLICATES] = field(default="off", metadata={
        "help": "align: near-duplicate replies (template fills, edited copies) found when the data is prepared drop the "
                "same tokens wherever they agree (goldfish-align-v1; needs --strategy hash); off: hash-v1 alone"})

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown goldfish strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        if not _is_number(self.k) or self.k < 2:
            raise ValueError(f"k must be a finite number >= 2 (drop rate 1/k; k=4 drops 25%), got {self.k!r}; "
                             "use strategy='none' to drop nothing")
        if isinstance(self.h, bool) or not isinstance(self.h, int) or self.h < 1:
            raise ValueError(f"h (context width) must be an integer >= 1, got {self.h!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be an integer in [0, 2**32), got {self.seed!r}")
        if isinstance(self.ignore_index, bool) or not isinstance(self.ignore_index, int):
            raise ValueError(f"ignore_index must be an integer, got {self.ignore_index!r}")
        if not _is_number(self.protect_k) or self.protect_k < 1:
            raise ValueError(f"protect_k must be a finite number >= 1 (1 drops every protected target), got {self.protect_k!r}")
        if isinstance(self.protect, str) or not all(isinstance(s, str) for s in self.protect):
            raise ValueError(f"protect must be a list of secret specs ('builtin' or files), got {self.protect!r}")
        if self.near_duplicates not in NEAR_DUPLICATES:
            raise ValueError(f"near_duplicates must be one of {', '.join(NEAR_DUPLICATES)}, got {self.near_duplicates!r}")
        if self.near_duplicates == "align" and self.strategy != "hash":
            raise ValueError(f"near-duplicate alignment (--near-duplicates align, goldfish-align-v1) hands out hash-v1 hashes: "
                             f"it needs --strategy hash, not {self.strategy}")
        for name in ("k", "protect_k"):
            object.__setattr__(self, name, _number(getattr(self, name)))
        object.__setattr__(self, "protect", tuple(self.protect))

    def to_dict(self) -> dict:
        return asdict(self)
