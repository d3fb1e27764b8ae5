"""Settings of the experiments: one dataclass, presets, and ``--config exp.toml`` files."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path


@dataclass
class ExperimentConfig:
    """Every experiment reads the fields it needs; CLI flags and TOML keys have the same names.

    Base model (the paper's pretrained model and the control): ``model`` (any local HF causal LM
    folder) or, by default, a tiny Llama pretrained on the embedded ``background`` part for
    ``base_steps`` steps of ``base_batch`` x ``base_seq`` tokens, cached.
    """

    out: str = "goldfish-demo"
    model: str | None = None
    seed: int = 0
    # documents to (not) memorize: the first n_docs embedded targets, doc_tokens tokens each
    n_docs: int = 16
    doc_tokens: int = 128
    prefix_len: int = 64
    suffix_len: int = 64
    # fine-tuning ("extreme" setting)
    epochs: float = 100
    batch_size: int = 4
    lr: float = 1e-3
    strategies: list[str] = field(default_factory=lambda: ["none", "hash"])
    k: float = 4
    h: int = 13
    # the tiny base model
    size: str = "tiny"
    base_steps: int | None = None  # None: the experiment's default (experiments.base.DEFAULT_BASE_STEPS)
    base_batch: int = 8
    base_seq: int = 128
    base_lr: float = 2e-3
    # pretraining from scratch with duplicated targets ("duplicated", "budget")
    repeats: int = 50
    background_docs: int | None = None  # use only the first N background documents (None: all)
    ks: list[float] = field(default_factory=lambda: [3, 4, 8, 32, 128])
    steps: int = 600
    eval_every: int = 50
    # chat fine-tuning ("chat")
    conversations: int = 400
    canned_share: float = 0.05
    chat_epochs: float = 5
    chat_lr: float = 5e-4
    protect_k: float = 2  # goldfish_protected's rate inside protected spans
    audit_batch: int = 32
    device: str | None = None
    progress: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS = {
    "default": {},
    # minutes on 2 CPU cores; shows each effect except duplicated's (too small for verbatim memorization)
    "quick": {"n_docs": 8, "epochs": 40, "base_steps": 120, "repeats": 40, "background_docs": 400, "steps": 200,
              "eval_every": 40, "ks": [4, 32], "conversations": 160, "canned_share": 0.15, "chat_epochs": 5,
              "chat_lr": 1e-3},
    # what the test suite runs: the whole pipeline in seconds, no claims about the figures
    "test": {"n_docs": 4, "doc_tokens": 48, "prefix_len": 24, "suffix_len": 24, "epochs": 3, "size": "micro",
             "base_steps": 6, "base_batch": 4, "base_seq": 64, "repeats": 2, "background_docs": 50, "steps": 8, "eval_every": 4,
             "ks": [4], "conversations": 40, "chat_epochs": 1, "progress": False},
}


def load_config(preset: str = "default", path: str | None = None, **overrides) -> ExperimentConfig:
    """Preset, then the TOML file's keys, then explicit overrides (``None`` values are ignored)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    cfg = replace(ExperimentConfig(), **PRESETS[preset])
    known = {f.name for f in fields(ExperimentConfig)}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ValueError(f"--config {path}: {e}") from None
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"--config {path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        cfg = replace(cfg, **data)
    cfg = replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    if cfg.prefix_len + cfg.suffix_len > cfg.doc_tokens:
        raise ValueError(f"prefix_len + suffix_len ({cfg.prefix_len} + {cfg.suffix_len}) must fit in doc_tokens ({cfg.doc_tokens})")
    return cfg
