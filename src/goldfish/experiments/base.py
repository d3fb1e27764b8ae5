"""The base model: a tiny Llama pretrained on the embedded ``background`` part, built once and cached
(keyed by corpus, tokenizer, model config and training settings), or a user's own HF folder."""

from __future__ import annotations

import json
from pathlib import Path

from goldfish.cache import atomic_dir, cache_dir, fingerprint
from goldfish.experiments.config import ExperimentConfig

BASE_RECIPE = "base-v1"  # bump when the recipe below changes
# Pretraining steps of the default base, per experiment: the demo's bars hold on a lighter base
# (and a cold `make demo` must stay within minutes); the chat SFT needs a stronger one to be a small
# adaptation, as it is for a real pretrained model (README, "What it took").
DEFAULT_BASE_STEPS = {"extreme": 300, "chat": 900}


def base_steps(cfg: ExperimentConfig, experiment: str) -> int:
    """``cfg.base_steps`` if set, else the experiment's default (DEFAULT_BASE_STEPS)."""
    return cfg.base_steps if cfg.base_steps is not None else DEFAULT_BASE_STEPS[experiment]


def _settings(cfg: ExperimentConfig, experiment: str) -> dict:
    from goldfish.embedded.tiny import TINY_CONFIGS

    return {"size": cfg.size, "arch": TINY_CONFIGS[cfg.size], "steps": base_steps(cfg, experiment), "batch": cfg.base_batch,
            "seq": cfg.base_seq, "lr": cfg.base_lr, "seed": cfg.seed}


def base_cache_path(cfg: ExperimentConfig, experiment: str) -> Path:
    """Where the tiny base for these settings lives in the cache (keyed by corpus, tokenizer, settings)."""
    from goldfish.embedded.corpus import corpus_fingerprint
    from goldfish.embedded.tiny import embedded_tokenizer_dir

    return cache_dir() / "base" / fingerprint(BASE_RECIPE, corpus_fingerprint(), embedded_tokenizer_dir().name, _settings(cfg, experiment))


def base_model_dir(cfg: ExperimentConfig, experiment: str) -> Path:
    """``cfg.model`` if given, else the cached tiny base (pretrained now if missing)."""
    if cfg.model is not None:
        return Path(cfg.model)
    final = base_cache_path(cfg, experiment)
    if (final / "goldfish.json").is_file():
        return final
    from goldfish.config import GoldfishConfig
    from goldfish.experiments.training import pretrain

    with atomic_dir(final) as tmp:
        pretrain(cfg, ["embedded:background"], GoldfishConfig(strategy="none", seed=cfg.seed), tmp, base_steps(cfg, experiment),
                 cfg.base_seq)
        (tmp / "base.json").write_text(json.dumps(_settings(cfg, experiment), indent=2))
    return final
