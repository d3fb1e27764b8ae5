"""Megatron-core integration: a dataset wrapper that puts the goldfish drops into ``loss_mask``.

``GoldfishDataset(dataset, cfg, eod_token=...)`` wraps a Megatron dataset whose samples carry
``tokens``, ``labels`` (``tokens`` shifted left by one, Megatron's GPT convention) and
``loss_mask`` -- a ``GPTDataset`` (from ``BlendedMegatronDatasetBuilder``), a ``BlendedDataset`` of
them, or any dataset with those keys -- and returns the same samples with ``loss_mask`` set to 0 at
the dropped targets. ``labels[t]`` is the target token x_{t+1}; its goldfish decision is the one
``goldfish.goldfish_mask`` gives that token in its document (goldfish-hash-v1 over the h tokens
before it in the same document), so a passage gets the same drops in Megatron pretraining and in
HF fine-tuning:

- documents end at the EOD token (Megatron's ``preprocess_data.py --append-eod``): the token after
  an EOD starts a new document, so documents packed into one sample are masked as their own;
- for a ``GPTDataset`` (alone or in a blend) the up-to-h tokens that precede the sample's first
  token in its indexed document are read from the indexed dataset, so a target's decision never
  depends on where Megatron cut the samples (any other dataset: the context starts at the sample);
- positions Megatron already masks (``--eod-mask-loss``, padding) stay masked, and since Megatron's
  loss divides by ``loss_mask.sum()``, |G| counts only kept targets.

Strategy ``paper-table`` instead reproduces the swiss-ai Megatron-LM fork's ``--goldfish-loss``
masks bit for bit (for runs that must match its checkpoints): the product-table rule of
``goldfish.mask`` over each sample's ``labels``, per sample, EOD ignored, the first h-1 labels of
a sample never dropped.

``add_goldfish_args`` / ``config_from_args`` give a Megatron training script the flags
``--goldfish-loss``, ``--goldfish-k``, ``--goldfish-h`` (the fork's names, same meaning),
``--goldfish-seed``, ``--goldfish-strategy`` and ``--goldfish-dataset-k PATH=K ...``.
"""

from __future__ import annotations

import argparse
import math
import typing
import warnings
from dataclasses import dataclass, field, fields

import torch
from megatron.core.datasets.blended_dataset import BlendedDataset
from megatron.core.datasets.gpt_dataset import GPTDataset

from goldfish.config import STRATEGIES, GoldfishConfig
from goldfish.mask import goldfish_mask

_FLAG_FIELDS = ("strategy", "k", "h", "seed")  # the GoldfishConfig fields a Megatron run sets by flag


@dataclass(frozen=True)
class MegatronGoldfishConfig(GoldfishConfig):
    """``GoldfishConfig`` plus the per-dataset k of a blend.

    dataset_k: {dataset path prefix (as in ``--data-path``): k} for the datasets of a blend whose k
        differs from ``k``; ``math.inf`` never drops (a dataset that opts out). Others use ``k``.
    """

    dataset_k: dict = field(default_factory=dict, metadata={"help": "per-dataset k of a blend: {path prefix: k}; inf never drops"})

    def __post_init__(self):
        super().__post_init__()
        for path, k in self.dataset_k.items():
            if isinstance(k, bool) or not isinstance(k, (int, float)) or not (k >= 2):
                raise ValueError(f"dataset_k[{path!r}] must be a number >= 2 (drop rate 1/k) or inf (never drop), got {k!r}")


class GoldfishDataset(torch.utils.data.Dataset):
    """A Megatron dataset whose ``loss_mask`` also carries the goldfish drops (module docstring).

    dataset: a ``GPTDataset``, a ``BlendedDataset`` of them, or any map-style dataset of dicts with
        ``tokens``, ``labels`` (= tokens shifted left by one) and ``loss_mask`` (1-D tensors).
    cfg: a ``MegatronGoldfishConfig`` (or a plain ``GoldfishConfig``: one k for every dataset).
    eod_token: the end-of-document id; default: the dataset config's ``tokenizer.eod``.
    Samples are returned as the wrapped dataset returns them (same keys, dtypes, ``dataset_id`` of a
    blend), ``loss_mask`` set to 0 where a target is dropped; ``dataset[None]`` (Megatron's padding
    sample, loss_mask all 0) passes through.
    """

    def __init__(self, dataset, cfg: GoldfishConfig, eod_token: int | None = None):
        if eod_token is None:
            eod_token = getattr(getattr(getattr(dataset, "config", None), "tokenizer", None), "eod", None)
            if eod_token is None:
                raise ValueError("GoldfishDataset needs eod_token=...: the dataset has no config.tokenizer.eod to read it from")
        self.dataset, self.cfg, self.eod_token = dataset, cfg, int(eod_token)
        paths = {g.dataset_path for g in _gpt_datasets(dataset)}
        unknown = sorted(set(getattr(cfg, "dataset_k", {})) - paths)
        if unknown:
            raise ValueError(f"dataset_k names {unknown}, which the wrapped dataset does not hold; its datasets are {sorted(map(str, paths))}")
        for g in _gpt_datasets(dataset):
            _warn_without_eod(g, self.eod_token)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx):
        sample = self.dataset[idx]
        if idx is None:  # Megatron's padding sample: nothing supervised
            return sample
        tokens, labels, loss_mask = sample["tokens"], sample["labels"], sample["loss_mask"]
        if tokens.ndim != 1 or tokens.shape != labels.shape or not torch.equal(tokens[1:], labels[:-1]):
            raise ValueError(f"sample {idx}: GoldfishDataset needs 1-D tokens and labels with labels = tokens shifted left by one "
                             "(Megatron's GPT convention)")
        gpt, gpt_idx = _locate(self.dataset, idx)
        k = getattr(self.cfg, "dataset_k", {}).get(getattr(gpt, "dataset_path", None), self.cfg.k)
        drop = self.drops(tokens, labels, loss_mask, preceding_tokens(gpt, gpt_idx, self.cfg.h) if gpt else labels[:0], k, idx)
        return {**sample, "loss_mask": loss_mask.masked_fill(drop, 0)}

    def drops(self, tokens, labels, loss_mask, preceding, k: float, idx: int) -> torch.Tensor:
        """Bool, the shape of ``labels``: True where the target ``labels[t]`` is dropped.

        preceding: the tokens before ``tokens[0]`` in its document (the hash's context, up to h).
        """
        if self.cfg.strategy == "paper-table":
            return goldfish_mask(labels, self.cfg, token_k=self._token_k(labels, k))
        text = torch.cat([preceding.to(tokens.dtype), tokens, labels[-1:]])  # labels[t] = text[first + t]
        first = len(preceding) + 1
        doc_ids = torch.nn.functional.pad(torch.cumsum(text == self.eod_token, 0)[:-1], (1, 0))  # a document starts after each EOD
        supervised = torch.nn.functional.pad(loss_mask != 0, (first, 0))  # "static" counts these
        generator = torch.Generator().manual_seed(self.cfg.seed * 2**32 + idx)  # "random": a sample's draws, in any worker
        drop = goldfish_mask(text, self.cfg, doc_ids=doc_ids, labels=torch.where(supervised, text, self.cfg.ignore_index),
                             token_k=self._token_k(text, k), generator=generator)
        return drop[first:]

    def _token_k(self, like, k: float):
        return None if k == self.cfg.k else torch.full(like.shape, float(k), dtype=torch.float64)


def preceding_tokens(gpt: GPTDataset, idx: int, h: int) -> torch.Tensor:
    """int64: the up-to-h tokens before the first token of ``gpt[idx]`` in its indexed document
    (empty where the sample starts its document)."""
    doc, offset = gpt.sample_index[gpt.shuffle_index[idx]]
    offset = int(offset)
    begin = max(0, offset - h)
    if offset == 0:
        return torch.zeros(0, dtype=torch.int64)
    ids = gpt.dataset.get(int(gpt.document_index[doc]), offset=begin, length=offset - begin)
    return torch.from_numpy(ids.astype("int64"))


def _locate(dataset, idx):
    """(the GPTDataset that holds sample ``idx`` of ``dataset``, its index there), or (None, idx)."""
    if isinstance(dataset, GPTDataset):
        return dataset, idx
    if isinstance(dataset, BlendedDataset):
        return _locate(dataset.datasets[dataset.dataset_index[idx]], int(dataset.dataset_sample_index[idx]))
    return None, idx


def _gpt_datasets(dataset) -> list:
    if isinstance(dataset, GPTDataset):
        return [dataset]
    if isinstance(dataset, BlendedDataset):
        return [g for d in dataset.datasets for g in _gpt_datasets(d)]
    return []


def _warn_without_eod(gpt: GPTDataset, eod: int, probe: int = 8) -> None:
    """Warn when none of the first ``probe`` indexed documents ends with EOD: goldfish would then
    take documents packed into one sample for one document."""
    lengths = gpt.dataset.sequence_lengths[:probe]
    ends = [int(gpt.dataset.get(i, offset=int(n) - 1, length=1)[0]) for i, n in enumerate(lengths) if n > 0]
    if ends and eod not in ends:
        warnings.warn(f"{gpt.dataset_path}: no document of the first {len(ends)} ends with the EOD token {eod}; goldfish takes "
                      "document boundaries from EOD, so prepare the data with --append-eod (or pass the right eod_token)")


def add_goldfish_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the goldfish flags to a Megatron argument parser (``pretrain(..., extra_args_provider=
    add_goldfish_args)``): ``--goldfish-loss`` turns goldfish on; ``--goldfish-{strategy,k,h,seed}``
    take GoldfishConfig's fields (defaults and help from there; ``--goldfish-k`` and
    ``--goldfish-h`` are the swiss-ai fork's flags, same meaning, but the fork defaults to 50/50);
    ``--goldfish-dataset-k PATH=K ...`` sets ``dataset_k``."""
    group = parser.add_argument_group("goldfish", "goldfish loss (goldfish.integrations.megatron)")
    group.add_argument("--goldfish-loss", action="store_true", help="drop goldfish targets from the loss mask")
    hints = typing.get_type_hints(GoldfishConfig)
    for f in fields(GoldfishConfig):
        if f.name in _FLAG_FIELDS:
            kind = {"choices": STRATEGIES, "type": str} if f.name == "strategy" else {"type": hints[f.name]}
            group.add_argument(f"--goldfish-{f.name}", default=f.default, help=f.metadata["help"], **kind)
    group.add_argument("--goldfish-dataset-k", nargs="+", default=[], metavar="PATH=K", type=_path_k,
                       help="per-dataset k of a blend: PATH=K pairs (PATH as in --data-path); inf never drops")
    return parser


def config_from_args(args: argparse.Namespace) -> MegatronGoldfishConfig | None:
    """The config the flags of ``add_goldfish_args`` describe; None without ``--goldfish-loss``."""
    if not args.goldfish_loss:
        return None
    return MegatronGoldfishConfig(**{name: getattr(args, f"goldfish_{name}") for name in _FLAG_FIELDS},
                                  dataset_k=dict(args.goldfish_dataset_k))


def _path_k(text: str) -> tuple[str, float]:
    path, sep, k = text.rpartition("=")
    try:
        value = float(k)
    except ValueError:
        value = math.nan
    if not sep or not path or math.isnan(value):
        raise argparse.ArgumentTypeError(f"expected PATH=K (a dataset path prefix and its k, e.g. /data/code=8), got {text!r}")
    return path, value
