"""The in-process engine: HF ``generate`` and forward passes on a loaded model (``goldfish.audit.engines``)."""

from __future__ import annotations

from goldfish.audit.extraction import generate_suffixes, max_context, token_logprobs
from goldfish.audit.sampling import DecodingRule, exact_logprobs, sample_suffixes


class HFEngine:
    """A loaded HF model and its tokenizer; ``batch_size`` sequences a batch (forward passes: half)."""

    def __init__(self, model, tokenizer, batch_size: int = 16, progress: bool = True):
        self.model, self.tokenizer, self.batch_size, self.progress = model, tokenizer, batch_size, progress

    @property
    def context(self) -> int:
        return max_context(self.model)

    def generate_suffixes(self, prefixes, lengths, beams=1, stop_at_eos=False, desc="extract"):
        return generate_suffixes(self.model, self.tokenizer, prefixes, lengths, self.batch_size, beams, stop_at_eos,
                                 self.progress, desc=desc)

    def sample_suffixes(self, prefixes, keys, lengths, samples, rule: DecodingRule, seed, stop_at_eos=False, desc="sample"):
        return sample_suffixes(self.model, self.tokenizer, prefixes, keys, lengths, samples, rule, seed, self.batch_size,
                               stop_at_eos, self.progress, desc=desc)

    def exact_logprobs(self, prefixes, suffixes, rule: DecodingRule, desc="p_exact"):
        return exact_logprobs(self.model, prefixes, suffixes, rule, max(1, self.batch_size // 2), self.progress, desc=desc)

    def token_logprobs(self, sequences, desc="score"):
        return token_logprobs(self.model, sequences, max(1, self.batch_size // 2), self.progress, desc=desc)

