"""Experiments: end-to-end recipes on the embedded data, and the blocks they share.

Layout: ``recipes/`` holds one file a recipe (no reusable logic, no imports of each other); beside it
the blocks: ``config`` (every recipe's settings dataclass), ``base`` (the cached tiny base models),
``training`` (goldfish train runs), ``documents`` / ``chat_data`` (the data), ``utility`` (benchmarks),
``reporting`` (tables, summary.json), ``seeds`` (``--seeds N``: a recipe over N seeds, aggregated).
A recipe is a module that satisfies ``Recipe``; ``RECIPES`` names them, each imported only when it runs.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable


@runtime_checkable
class Recipe(Protocol):
    """What ``goldfish experiment NAME`` (and ``--seeds``) reads of a recipe module.

    CONFIG: its settings dataclass (``goldfish.experiments.config``; flags, ``--config`` keys, ``PRESETS``).
    BASE: the name of the base model its seeds share (``experiments.base``), or None: trained from scratch.
    run(cfg) -> result: trains, audits, writes ``summary.json`` and the report into ``cfg.out``.
    lines(result): what the command prints: strings, and tables as (headers, rows).
    headline(result): (label, dotted path into ``result``) of the figures ``--seeds`` reports, for
        the runs ``result`` holds.
    """

    CONFIG: ClassVar[type]
    BASE: ClassVar[str | None]

    def run(self, cfg: Any) -> dict: ...

    def lines(self, result: dict) -> list: ...

    def headline(self, result: dict) -> list[tuple[str, str]]: ...


@dataclass(frozen=True)
class RecipeEntry:
    """A recipe of ``RECIPES``: its name (``goldfish experiment NAME``), help line and module."""

    name: str
    help: str
    module: str

    def load(self) -> Recipe:
        """The recipe's module; TypeError when it lacks a member of ``Recipe``."""
        recipe = importlib.import_module(self.module)
        if not isinstance(recipe, Recipe):
            missing = [m for m in ("CONFIG", "BASE", "run", "lines", "headline") if not hasattr(recipe, m)]
            raise TypeError(f"{self.module} is no goldfish.experiments.Recipe: it lacks {', '.join(missing)}")
        return recipe


RECIPES = {r.name: r for r in (
    RecipeEntry("extreme", "the paper's Fig. 1: continue training the base 100 epochs on 16 documents; standard vs goldfish "
                           "(goldfish demo runs it)", "goldfish.experiments.recipes.extreme"),
    RecipeEntry("duplicated", "the paper's Fig. 2: pretrain with the documents inserted many times; standard vs k in "
                              "{3, 4, 8, 32, 128}", "goldfish.experiments.recipes.duplicated"),
    RecipeEntry("budget", "the paper's Fig. 5: validation loss against input and supervised tokens",
                "goldfish.experiments.recipes.budget"),
    RecipeEntry("sweep", "goldfish sweep on the demo's extreme setting: one model per k, the standard loss as reference, "
                         "the frontier of memorization against held-out loss and the largest k that meets the target",
                "goldfish.experiments.recipes.sweep"),
    RecipeEntry("chat", "SFT on chats where a canned reply leaks a name, a phone number and an email",
                "goldfish.experiments.recipes.chat"),
)}
