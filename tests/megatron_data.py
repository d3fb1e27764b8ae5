"""Tiny Megatron-core datasets for the tests: documents written with Megatron's own
``IndexedDatasetBuilder``, read back through ``GPTDataset`` / ``BlendedDataset`` built by
``BlendedMegatronDatasetBuilder`` (indices built in memory: no cache folder, so no process group needed)."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder


class EodTokenizer:
    """What GPTDatasetConfig reads of a Megatron tokenizer: the EOD id, the vocabulary size, an identity."""

    def __init__(self, vocab_size: int, eod: int):
        self.vocab_size, self.eod = vocab_size, eod

    @property
    def unique_identifiers(self) -> OrderedDict:
        return OrderedDict({"class": "EodTokenizer", "vocab_size": self.vocab_size, "eod": self.eod})


def write_indexed(prefix: Path, documents: list[list[int]]) -> str:
    """Write ``documents`` (token ids, each ending with its EOD) as ``prefix``.bin/.idx; returns the prefix."""
    builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=np.int32)
    for doc in documents:
        builder.add_item(torch.tensor(doc, dtype=torch.int32))
        builder.end_document()
    builder.finalize(f"{prefix}.idx")
    return str(prefix)


def gpt_datasets(blend: list[str], weights: list[float] | None, samples: int, seq_length: int, tokenizer: EodTokenizer,
                 seed: int = 1234, **config):
    """The train split of ``blend`` (one path: a GPTDataset; several: a BlendedDataset)."""
    cfg = GPTDatasetConfig(random_seed=seed, sequence_length=seq_length, blend=(blend, weights), split="100,0,0",
                           path_to_cache=None, tokenizer=tokenizer, reset_position_ids=config.pop("reset_position_ids", False),
                           reset_attention_mask=False, eod_mask_loss=config.pop("eod_mask_loss", False),
                           create_attention_mask=False, **config)
    train, _, _ = BlendedMegatronDatasetBuilder(GPTDataset, [samples, 0, 0], lambda: True, cfg).build()
    return train
