"""Extraction: split documents into prefix/suffix, decode suffixes in batches, score token log-probs."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm


def max_context(model) -> int:
    """Tokens a model (or its config) reads: ``max_position_embeddings``, 2048 when it has none."""
    return int(getattr(getattr(model, "config", model), "max_position_embeddings", None) or 2048)


def split_document(ids: list[int], prefix_len: int | None, suffix_len: int, context: int):
    """(prefix, suffix) of a tokenized document, or None when it is too short.

    suffix = the last ``suffix_len`` tokens; prefix = the ``prefix_len`` tokens before it (default:
    all of them, keeping the last ``context - suffix_len`` so prefix + suffix fit the model).
    """
    want = prefix_len if prefix_len is not None else 1
    if len(ids) < want + suffix_len:
        return None
    before = ids[: len(ids) - suffix_len]
    keep = min(prefix_len if prefix_len is not None else len(before), context - suffix_len)
    return before[len(before) - keep :], ids[len(ids) - suffix_len :]


def split_at_offset(ids: list[int], offset: int, prefix_len: int, suffix_len: int, context: int):
    """(prefix, suffix) with the prefix starting ``offset`` tokens into the document: prefix =
    ids[offset : offset + prefix_len], suffix = the ``suffix_len`` tokens right after; None when the
    document is too short or prefix + suffix exceed the model's context."""
    end = offset + prefix_len + suffix_len
    if len(ids) < end or prefix_len + suffix_len > context:
        return None
    return ids[offset : offset + prefix_len], ids[offset + prefix_len : end]


def length_batches(sequences: list[list[int]], batch_size: int, progress: bool, desc: str):
    """Indices of ``sequences`` in batches of similar length (sorted by length), with a progress bar."""
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    for start in tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress, unit="batch"):
        yield order[start : start + batch_size]


def pad_batch(sequences: list[list[int]], pad: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask) of the sequences padded with ``pad`` to the longest, on the left or right."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        cols = slice(width - len(seq), width) if left else slice(0, len(seq))
        ids[row, cols] = torch.tensor(seq, dtype=torch.long)
        mask[row, cols] = 1
    return ids, mask


@torch.no_grad()
def generate_suffixes(
    model, tokenizer, prefixes: list[list[int]], suffix_len, batch_size: int = 16, beams: int = 1,
    stop_at_eos: bool = False, progress: bool = True, desc: str = "extract",
) -> list[list[int]]:
    """Greedy (or beam) continuations of exactly ``suffix_len`` tokens for each prefix.

    ``suffix_len``: one length for all, or one per prefix (greedy decodes a batch to its longest and
    cuts each row, which gives the same tokens; beam search runs each length apart). HF
    ``generate`` with its KV cache on left-padded batches; prefixes are batched by length so padding
    stays small. Decoding does not stop at EOS unless ``stop_at_eos`` (then the result may be
    shorter). Same tokens as one-prefix-at-a-time ``generate(do_sample=False)``.
    """
    lengths = [suffix_len] * len(prefixes) if isinstance(suffix_len, int) else list(suffix_len)
    if beams > 1 and len(set(lengths)) > 1:
        out: list[list[int] | None] = [None] * len(prefixes)
        for n in sorted(set(lengths)):
            idx = [i for i, m in enumerate(lengths) if m == n]
            for i, gen in zip(idx, generate_suffixes(model, tokenizer, [prefixes[i] for i in idx], n, batch_size, beams,
                                                     stop_at_eos, progress, f"{desc} ({n} tokens)")):
                out[i] = gen
        return out
    from transformers import GenerationConfig

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = [None] * len(prefixes)
    device = next(model.parameters()).device
    for idx in length_batches(prefixes, batch_size, progress, desc):
        ids, mask = pad_batch([prefixes[i] for i in idx], pad, left=True)
        width = ids.shape[1]
        config = GenerationConfig(
            max_new_tokens=max(lengths[i] for i in idx), do_sample=False, num_beams=beams, pad_token_id=pad,
            eos_token_id=tokenizer.eos_token_id if stop_at_eos else [],
        )
        gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config)
        for row, i in enumerate(idx):
            new = gen[row, width : width + lengths[i]].tolist()
            if stop_at_eos and tokenizer.eos_token_id in new:
                new = new[: new.index(tokenizer.eos_token_id)]
            out[i] = new
    return out


@torch.no_grad()
def token_logprobs(model, sequences: list[list[int]], batch_size: int = 8, progress: bool = True, desc: str = "score"):
    """Per sequence: (log p(x_i | x_<i) for i >= 1, mean and std of log p(. | x_<i)) as float64 arrays."""
    device = next(model.parameters()).device
    out = [None] * len(sequences)
    for idx in length_batches(sequences, batch_size, progress, desc):
        ids, mask = pad_batch([sequences[i] for i in idx], 0, left=False)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits[:, :-1].float()
        logp = torch.log_softmax(logits, dim=-1)
        p = logp.exp()
        mu = (p * logp).sum(-1)
        sigma = ((p * logp.square()).sum(-1) - mu.square()).clamp(min=0).sqrt()
        target = logp.gather(-1, ids[:, 1:].to(device).unsqueeze(-1)).squeeze(-1)
        for row, i in enumerate(idx):
            n = len(sequences[i]) - 1
            out[i] = tuple(np.asarray(t[row, :n].cpu(), dtype=np.float64) for t in (target, mu, sigma))
    return out
