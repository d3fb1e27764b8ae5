"""torchtitan integration: a labels transform for its text dataloader.

``GoldfishTextDataset(dataset, cfg, eos_token=...)`` wraps torchtitan's ``HuggingFaceTextDataset``
(or any iterable of ``({"input": x[:-1]}, x[1:])`` windows cut one after another from one token
stream, as torchtitan cuts its buffer) and sets the labels of dropped targets to torchtitan's
``IGNORE_INDEX`` (-100), which its ``cross_entropy_loss`` skips and its trainer leaves out of the
token count it normalises by. The decision of each target is ``goldfish.goldfish_mask``'s over its
document (documents end at ``eos_token``; torchtitan's tokenizer appends it to every document), with
the last h tokens of the previous window carried over as context, so it never depends on where the
stream was cut -- the same drops as the HF and Megatron paths give the same documents. The carried
context is part of ``state_dict()``, so a resumed run continues with the same masks.
"""

from __future__ import annotations

import torch
from torch.distributed.checkpoint.stateful import Stateful
from torch.utils.data import IterableDataset
from torchtitan.components.loss import IGNORE_INDEX

from goldfish.config import GoldfishConfig
from goldfish.mask import goldfish_mask

_STATE_KEY = "goldfish_context"


class GoldfishTextDataset(IterableDataset, Stateful):
    """torchtitan windows with goldfish drops in the labels (module docstring).

    dataset: yields ``(inputs, labels)``, ``inputs["input"]`` 1-D token ids and ``labels`` the same
        stream shifted left by one; consecutive windows follow each other in the stream.
    cfg: the goldfish config.
    eos_token: the id that ends each document.
    """

    def __init__(self, dataset, cfg: GoldfishConfig, eos_token: int):
        self.dataset, self.cfg, self.eos_token = dataset, cfg, int(eos_token)
        self._context: list[int] = []  # the previous window's last h tokens

    def __iter__(self):
        for n, (inputs, labels) in enumerate(self.dataset):
            tokens = inputs["input"]
            if tokens.ndim != 1 or tokens.shape != labels.shape or not torch.equal(tokens[1:], labels[:-1]):
                raise ValueError(f"window {n}: GoldfishTextDataset needs 1-D inputs['input'] and labels = input shifted left by one "
                                 "(torchtitan's text dataset)")
            text = torch.cat([torch.tensor(self._context, dtype=tokens.dtype), tokens, labels[-1:]])
            doc_ids = torch.nn.functional.pad(torch.cumsum(text == self.eos_token, 0)[:-1], (1, 0))  # a document starts after each EOS
            drop = goldfish_mask(text, self.cfg, doc_ids=doc_ids)[len(self._context) + 1:]
            self._context = text[-self.cfg.h:].tolist()
            yield inputs, labels.masked_fill(drop, IGNORE_INDEX)

    def state_dict(self) -> dict:
        return {**self.dataset.state_dict(), _STATE_KEY: list(self._context)}

    def load_state_dict(self, state_dict: dict) -> None:
        state = dict(state_dict)
        self._context = list(state.pop(_STATE_KEY, []))
        self.dataset.load_state_dict(state)
