"""Sampled extraction and the exact extraction probability, under one decoding rule.

The rule is HF ``generate(do_sample=True)``'s: logits / temperature, then top-k, then top-p, each a
truncation (the removed tokens get -inf) with one token always kept, then the softmax over what is
left. It is built from transformers' own warpers (``TemperatureLogitsWarper``, ``TopKLogitsWarper``,
``TopPLogitsWarper``, in the order and with the ``min_tokens_to_keep=1`` generate uses), so the
semantics are HF's: top-k keeps every token tied with the k-th largest logit; top-p drops, in
ascending order, the tokens whose cumulative probability (themselves included) is <= 1 - top_p,
i.e. it keeps the smallest set of most likely tokens whose mass reaches top_p (tokens tied at that
cut fall on either side by sort order).

Sampling draws each token by inverse CDF from one uniform, and every continuation (prompt key,
sample j) has its own CPU ``torch.Generator`` seeded from (sample_seed, key, j): its tokens do not
depend on the batch size, the batch order, the other prompts or the device's RNG (up to float
differences of padded batches, as for greedy decoding). The key is the probe's membership and id,
so every model of an audit gets the same random numbers (paired comparisons).

The exact probability: log p_exact = sum over the true suffix of log p_rule(true token | all tokens
before it), teacher-forced in one forward pass per batch; -inf when a true token is outside the
kept set (the rule can then never reproduce the suffix).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch

from goldfish.audit.extraction import length_batches, pad_batch


@dataclass(frozen=True)
class DecodingRule:
    """temperature > 0; top_k >= 1 or None (off); 0 < top_p <= 1 (1 = off)."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float = 1.0

    def log_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """log p_rule of each token, rows of (..., vocab) logits, in float64 (-inf: truncated)."""
        from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

        scores = logits.double().reshape(-1, logits.shape[-1])
        if self.temperature != 1.0:
            scores = TemperatureLogitsWarper(self.temperature)(None, scores)
        if self.top_k is not None:
            scores = TopKLogitsWarper(self.top_k, min_tokens_to_keep=1)(None, scores)
        if self.top_p < 1.0:
            scores = TopPLogitsWarper(self.top_p, min_tokens_to_keep=1)(None, scores)
        return torch.log_softmax(scores, dim=-1).reshape(logits.shape)


def sample_generator(seed: int, key: str, sample: int) -> torch.Generator:
    """The CPU generator of continuation ``sample`` of the prompt ``key`` (module docstring)."""
    digest = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:16], "big")
    state = np.random.SeedSequence([seed, digest, sample]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


class _InverseCdfSampler:
    """A logits processor for greedy ``generate`` that samples under ``rule``, one generator a row,
    and returns logits that are -inf except at the sampled token (so argmax picks it)."""

    def __init__(self, rule: DecodingRule, generators: list[torch.Generator]):
        self.rule, self.generators = rule, generators

    def __call__(self, input_ids, scores):
        cdf = self.rule.log_probs(scores).exp().cumsum(-1)
        u = torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in self.generators]).to(scores.device)
        pick = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(-1), right=True).clamp(max=scores.shape[-1] - 1)
        return torch.full_like(scores, -math.inf).scatter_(1, pick, 0.0)


@torch.no_grad()
def sample_suffixes(model, tokenizer, prefixes: list[list[int]], keys: list[str], lengths: list[int], samples: int,
                    rule: DecodingRule, seed: int, batch_size: int = 16, stop_at_eos: bool = False, progress: bool = True,
                    desc: str = "sample") -> list[list[list[int]]]:
    """``samples`` sampled continuations of ``lengths[i]`` tokens for each prefix (shorter only with
    ``stop_at_eos``), as out[i][j]. Batches hold ``batch_size`` continuations (memory as greedy
    decoding of that batch size), of prompts of similar length, with HF ``generate`` and its KV cache."""
    from transformers import GenerationConfig, LogitsProcessorList

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    items = [(i, j) for i in range(len(prefixes)) for j in range(samples)]
    out = [[None] * samples for _ in prefixes]
    device = next(model.parameters()).device
    for idx in length_batches([prefixes[i] for i, _ in items], batch_size, progress, desc):
        batch = [items[k] for k in idx]
        ids, mask = pad_batch([prefixes[i] for i, _ in batch], pad, left=True)
        width = ids.shape[1]
        sampler = _InverseCdfSampler(rule, [sample_generator(seed, keys[i], j) for i, j in batch])
        config = GenerationConfig(max_new_tokens=max(lengths[i] for i, _ in batch), do_sample=False, num_beams=1,
                                  pad_token_id=pad, eos_token_id=tokenizer.eos_token_id if stop_at_eos else [])
        gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config,
                             logits_processor=LogitsProcessorList([sampler]))
        for row, (i, j) in enumerate(batch):
            new = gen[row, width : width + lengths[i]].tolist()
            if stop_at_eos and tokenizer.eos_token_id in new:
                new = new[: new.index(tokenizer.eos_token_id)]
            out[i][j] = new
    return out


@torch.no_grad()
def exact_logprobs(model, prefixes: list[list[int]], suffixes: list[list[int]], rule: DecodingRule, batch_size: int = 8,
                   progress: bool = True, desc: str = "p_exact") -> list[float]:
    """Natural log of the probability that one sample under ``rule`` after each prefix is exactly its
    suffix (module docstring); -inf when the rule cannot produce it."""
    device = next(model.parameters()).device
    sequences = [p + s for p, s in zip(prefixes, suffixes)]
    out = [None] * len(sequences)
    for idx in length_batches(sequences, batch_size, progress, desc):
        ids, mask = pad_batch([sequences[i] for i in idx], 0, left=False)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        for row, i in enumerate(idx):
            start, n = len(prefixes[i]), len(suffixes[i])
            logp = rule.log_probs(logits[row, start - 1 : start - 1 + n])
            true = torch.tensor(suffixes[i], device=logp.device).unsqueeze(-1)
            out[i] = float(logp.gather(-1, true).sum())
    return out
