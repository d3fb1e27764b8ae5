"""`GoldfishConfig`: which targets the goldfish loss drops, validated on creation."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Literal

STRATEGIES = ("hash", "static", "random", "paper-table", "none")


@dataclass(frozen=True)
class GoldfishConfig:
    """Settings of the goldfish mask.

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
    """

    strategy: Literal[STRATEGIES] = field(default="hash", metadata={"help": "drop rule: hash (the goldfish hash), static, random, paper-table, "
                                                           "none (the standard loss)"})
    k: float = field(default=4, metadata={"help": "drop 1 in k supervised targets (k >= 2)"})
    h: int = field(default=13, metadata={"help": "context width of the hash: the h tokens before a target"})
    seed: int = field(default=0, metadata={"help": "seed of the goldfish hash (and of the random strategy's draws)"})
    ignore_index: int = field(default=-100, metadata={"help": "label value meaning 'not supervised'"})
    protect_k: float = field(default=2, metadata={"help": "drop 1 in protect_k targets inside protected spans; 1 drops them all"})

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"unknown goldfish strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}"
            )
        if isinstance(self.k, bool) or not isinstance(self.k, (int, float)):
            raise ValueError(f"k must be a number >= 2 (drop rate 1/k), got {self.k!r}")
        if not math.isfinite(self.k) or self.k < 2:
            raise ValueError(
                f"k must be a finite number >= 2 (drop rate 1/k; k=4 drops 25%), got {self.k!r}; "
                "use strategy='none' to drop nothing"
            )
        if isinstance(self.h, bool) or not isinstance(self.h, int) or self.h < 1:
            raise ValueError(f"h (context width) must be an integer >= 1, got {self.h!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be an integer in [0, 2**32), got {self.seed!r}")
        if isinstance(self.ignore_index, bool) or not isinstance(self.ignore_index, int):
            raise ValueError(f"ignore_index must be an integer, got {self.ignore_index!r}")

        if isinstance(self.protect_k, bool) or not isinstance(self.protect_k, (int, float)) or not (
                math.isfinite(self.protect_k) and self.protect_k >= 1):
            raise ValueError(f"protect_k must be a finite number >= 1 (1 drops every protected target), got {self.protect_k!r}")

    def to_dict(self) -> dict:
        return asdict(self)
