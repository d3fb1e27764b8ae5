"""Recipes: end-to-end experiments on the embedded data, one face each.

A recipe module holds ``CONFIG`` (its settings dataclass, ``goldfish.experiments.config``),
``run(cfg) -> result`` (trains, audits, writes ``summary.json`` and the report into ``cfg.out``) and
``lines(result)`` (what ``goldfish experiment NAME`` prints: strings, and tables as (headers, rows)).
``RECIPES`` names them; modules are imported only when a recipe runs.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    name: str
    help: str
    module: str

    def load(self):
        """The recipe's module (``CONFIG``, ``run``, ``lines``)."""
        return importlib.import_module(self.module)


RECIPES = {r.name: r for r in (
    Recipe("extreme", "the paper's Fig. 1: continue training the base 100 epochs on 16 documents; standard vs goldfish "
                      "(goldfish demo runs it)", "goldfish.experiments.extreme"),
    Recipe("duplicated", "the paper's Fig. 2: pretrain with the documents inserted many times; standard vs k in "
                         "{3, 4, 8, 32, 128}", "goldfish.experiments.duplicated"),
    Recipe("budget", "the paper's Fig. 5: validation loss against input and supervised tokens", "goldfish.experiments.budget"),
    Recipe("sweep", "goldfish sweep on the demo's extreme setting: one model per k, the standard loss as reference, the "
                    "frontier of memorization against held-out loss and the largest k that meets the target",
           "goldfish.experiments.sweep"),
    Recipe("chat", "SFT on chats where a canned reply leaks a name, a phone number and an email", "goldfish.experiments.chat"),
)}
