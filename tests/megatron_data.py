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


class SdpaCoreAttention(torch.nn.Module):
    """Causal softmax attention, a drop-in for the ``core_attention`` of Megatron's local GPT layer
    spec that runs on the CPU: megatron-core 0.16.1's ``DotProductAttention`` cannot (its score
    buffer is allocated with ``device=torch.cuda.current_device()``, which raises "AssertionError:
    Torch not compiled with CUDA enabled" on CPU-only torch). Tensors as Megatron passes them:
    query/key/value [s, b, heads, head_dim] -> [s, b, heads * head_dim]."""

    def __init__(self, config, layer_number, attn_mask_type, attention_type, **_):
        super().__init__()

    def forward(self, query, key, value, attention_mask, attn_mask_type=None, attention_bias=None, packed_seq_params=None):
        q, k, v = (x.permute(1, 2, 0, 3) for x in (query, key, value))
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return out.permute(2, 0, 1, 3).reshape(out.shape[2], out.shape[0], -1)


def tiny_gpt_model(vocab_size: int, seq_length: int):
    """A 2-layer Megatron-core ``GPTModel`` on the CPU (use_cpu_initialization, no dropout), its core
    attention ``SdpaCoreAttention``; needs a process group and ``parallel_state`` initialised."""
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.models.gpt.gpt_model import GPTModel
    from megatron.core.transformer.transformer_config import TransformerConfig

    spec = get_gpt_layer_local_spec()
    spec.submodules.self_attention.submodules.core_attention = SdpaCoreAttention
    config = TransformerConfig(num_layers=2, hidden_size=32, num_attention_heads=4, use_cpu_initialization=True,
                               hidden_dropout=0.0, attention_dropout=0.0)
    return GPTModel(config=config, transformer_layer_spec=spec, vocab_size=vocab_size, max_sequence_length=seq_length)


def tiny_train_ds(folder: Path):
    """A GPTDataset of 512-token samples over random documents (each ending with EOD), for the README's lines."""
    rng = np.random.default_rng(0)
    docs = [list(rng.integers(0, 999, n)) + [999] for n in rng.integers(20, 600, 40)]
    folder.mkdir(parents=True, exist_ok=True)
    return gpt_datasets([write_indexed(folder / "docs", docs)], None, 8, 512, EodTokenizer(1000, 999))
