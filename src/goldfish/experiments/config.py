"""Settings of the experiments: one dataclass a recipe (the flags, ``--config`` keys and presets of
``goldfish experiment NAME``), all built on ``ExperimentConfig``, the settings every recipe shares.
The mask settings (``k``, ``h``, ``protect_k``) take their defaults from ``GoldfishConfig``'s fields."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import ClassVar, Literal

from goldfish.arguments import field_like
from goldfish.config import STRATEGIES, GoldfishConfig
from goldfish.embedded.tiny import TINY_CONFIGS


@dataclass
class ExperimentConfig:
    """What every recipe takes. The base model (the paper's pretrained model and the control) is
    ``model`` (any local HF causal LM folder) or, by default, a tiny Llama pretrained on the embedded
    ``background`` part for ``base_steps`` steps of ``base_batch`` x ``base_seq`` tokens, cached."""

    out: str | None = field(default=None, metadata={"help": "output folder (None: goldfish-NAME; the demo: goldfish-demo)"})
    model: str | None = field(default=None, metadata={
        "help": "base model: any local HF causal LM folder (None: the cached tiny base)"})
    seed: int = field(default=0, metadata={"help": "seed of the data, the training and the goldfish hash"})
    seeds: int = field(default=1, metadata={
        "help": "run the experiment for seeds seed .. seed + N - 1 (each in OUT/seed-S) and report mean and min-max"})
    k: float = field_like(GoldfishConfig, "k", help="goldfish k (drop 1 in k targets)")
    h: int = field_like(GoldfishConfig, "h", help="goldfish context width")
    size: Literal[tuple(TINY_CONFIGS)] = field(default="tiny", metadata={"help": "size of the tiny base"})
    base_steps: int | None = field(default=None, metadata={
        "help": "pretraining steps of the tiny base (None: the recipe's, experiments.base.DEFAULT_BASE_STEPS)"})
    base_batch: int = field(default=8, metadata={"help": "rows a pretraining step"})
    base_seq: int = field(default=128, metadata={"help": "tokens a pretraining row"})
    base_lr: float = field(default=2e-3, metadata={"help": "pretraining learning rate (cosine schedule)"})
    audit_batch: int = field(default=32, metadata={"help": "batch size of the audits"})
    benchmark_items: int | None = field(default=None, metadata={
        "help": "items of each embedded benchmark task the runs are scored on (None: all)"})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, ... (None: cuda if available)"})
    progress: bool = field(default=True, metadata={"help": "progress bars"})

    PRESETS: ClassVar[dict] = {}

    def to_dict(self) -> dict:
        return asdict(self)


SAMPLING_HELP = {"samples": "the audits' sampled continuations per prompt besides greedy (goldfish audit --samples; 0: greedy only)",
                 "temperature": "the audits' sampling temperature (also the exact extraction probability's)",
                 "top_p": "the audits' sampling nucleus: keep the most likely tokens of mass P (1: off)"}


def sampling_field(name: str, default):
    """A recipe's setting of the audits' strong attacker (``SAMPLING_HELP``), with the recipe's default."""
    return field(default=default, metadata={"help": SAMPLING_HELP[name]})


@dataclass
class DocumentsConfig(ExperimentConfig):
    """Recipes that audit the extraction of embedded documents: the first ``n_docs`` embedded targets of
    ``doc_tokens`` tokens; a ``prefix_len``-token prefix continued greedily for ``suffix_len`` tokens."""

    n_docs: int = field(default=16, metadata={"help": "documents to (not) memorize"})
    doc_tokens: int = field(default=128, metadata={"help": "tokens a document"})
    prefix_len: int = field(default=64, metadata={"help": "extraction prefix tokens"})
    suffix_len: int = field(default=64, metadata={"help": "extraction suffix tokens"})
    # the demo's strong attacker: Apertus' re-check of memorization (nucleus sampling at T = 1, p = 0.9), best of 32
    samples: int = sampling_field("samples", 32)
    temperature: float = sampling_field("temperature", 1.0)
    top_p: float = sampling_field("top_p", 0.9)

    def __post_init__(self):
        if self.prefix_len + self.suffix_len > self.doc_tokens:
            raise ValueError(f"prefix_len + suffix_len ({self.prefix_len} + {self.suffix_len}) must fit in doc_tokens "
                             f"({self.doc_tokens})")


_TEST = {"size": "micro", "base_steps": 6, "base_batch": 4, "base_seq": 64, "benchmark_items": 8, "progress": False}  # seconds
_TEST_DOCS = {**_TEST, "n_docs": 4, "doc_tokens": 48, "prefix_len": 24, "suffix_len": 24, "samples": 4}


@dataclass
class ExtremeConfig(DocumentsConfig):
    """``goldfish demo`` / ``experiment extreme`` (paper Fig. 1): continue training the base many epochs on a few documents."""

    epochs: float = field(default=100, metadata={"help": "epochs over the documents"})
    batch_size: int = field(default=4, metadata={"help": "documents a step"})
    lr: float = field(default=1e-3, metadata={"help": "learning rate (constant)"})
    strategies: list[str] = field(default_factory=lambda: ["none", "hash"], metadata={
        "argparse": {"choices": STRATEGIES}, "help": "runs to compare (none = the standard loss)"})

    PRESETS: ClassVar[dict] = {"quick": {"n_docs": 8, "epochs": 40, "base_steps": 120}, "test": {**_TEST_DOCS, "epochs": 3}}


@dataclass
class SweepConfig(DocumentsConfig):
    """``experiment sweep``: ``goldfish sweep`` on the demo's extreme setting (its documents, base and fine-tuning),
    with the demo's sampled attacker (best of ``samples`` at ``temperature``, top-p ``top_p``)."""

    epochs: float = field_like(ExtremeConfig, "epochs")
    batch_size: int = field_like(ExtremeConfig, "batch_size")
    lr: float = field_like(ExtremeConfig, "lr")
    ks: list[float] = field(default_factory=lambda: [2, 3, 4, 8, 16, 32], metadata={"help": "goldfish k of each point"})
    target: str | None = field(default=None, metadata={"help": "the memorization target (goldfish sweep --target; None: its default)"})

    # quick: half the demo's documents, its 100 epochs and its base. The demo's own quick setting (40 epochs on a
    # 120-step base) leaves the standard model memorizing nothing (0 of 8 documents in any of 32 samples), so
    # every k met the target and the frontier said nothing about k
    PRESETS: ClassVar[dict] = {"quick": {"n_docs": 8, "epochs": 100},
                               "test": {**_TEST_DOCS, "epochs": 3, "ks": [2, 8]}}


@dataclass
class DuplicatedConfig(DocumentsConfig):
    """``experiment duplicated`` (paper Fig. 2): pretrain from scratch with the documents inserted ``repeats`` times."""

    repeats: int = field(default=50, metadata={"help": "times each document is inserted into the background text"})
    background_docs: int | None = field(default=None, metadata={"help": "use only the first N background documents"})
    ks: list[float] = field(default_factory=lambda: [3, 4, 8, 32, 128], metadata={"help": "goldfish k values"})
    steps: int = field(default=600, metadata={"help": "pretraining steps"})

    PRESETS: ClassVar[dict] = {
        "quick": {"n_docs": 8, "repeats": 40, "background_docs": 400, "steps": 200, "ks": [4, 32]},
        "test": {**_TEST_DOCS, "repeats": 2, "background_docs": 50, "steps": 8, "ks": [4]}}


@dataclass
class BudgetConfig(ExperimentConfig):
    """``experiment budget`` (paper Fig. 5): validation loss against input and supervised tokens."""

    steps: int = field(default=600, metadata={"help": "pretraining steps"})
    eval_every: int = field(default=50, metadata={"help": "steps between validation-loss points"})

    PRESETS: ClassVar[dict] = {"quick": {"steps": 200, "eval_every": 40}, "test": {**_TEST, "steps": 8, "eval_every": 4}}


@dataclass
class ChatConfig(ExperimentConfig):
    """``experiment chat``: SFT on chats where a canned reply leaks a name, a phone number and an email."""

    conversations: int = field(default=300, metadata={"help": "training conversations"})
    canned_share: float = field(default=0.2, metadata={
        "help": "share of user turns that are out-of-scope requests (half of them billing questions)"})
    sign_share: float = field(default=0.12, metadata={"help": "share of user turns that are order questions (signed replies)"})
    epochs: float = field(default=4, metadata={"help": "fine-tuning epochs"})
    batch_size: int = field(default=4, metadata={"help": "conversations a step"})
    lr: float = field(default=7e-4, metadata={"help": "fine-tuning learning rate (constant)"})
    protect_k: float = field_like(GoldfishConfig, "protect_k", help="goldfish_protected's rate inside protected spans")
    # a deployed chat model's decoding, asked 16 times (the secret sets' audits only)
    samples: int = sampling_field("samples", 16)
    temperature: float = sampling_field("temperature", 0.7)
    top_p: float = sampling_field("top_p", 0.9)

    PRESETS: ClassVar[dict] = {
        "quick": {"base_steps": 120, "conversations": 160, "canned_share": 0.15, "lr": 1e-3},
        # test: a micro model, one batch a set; no nucleus (top-p sorts the vocabulary at every step: most of this
        # preset's time on one thread; tests/test_audit_sampling.py checks top-p)
        "test": {**_TEST, "conversations": 40, "epochs": 1, "samples": 2, "audit_batch": 128, "top_p": 1.0}}
