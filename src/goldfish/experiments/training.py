"""The two training recipes the experiments share, both ``goldfish train`` underneath."""

from __future__ import annotations

from pathlib import Path

from goldfish.config import GoldfishConfig
from goldfish.experiments.config import ExperimentConfig


def goldfish_config(cfg: ExperimentConfig, strategy: str, k: float | None = None) -> GoldfishConfig:
    return GoldfishConfig(strategy=strategy, k=cfg.k if k is None else k, h=cfg.h, seed=cfg.seed, protect_k=cfg.protect_k)


def pretrain(cfg: ExperimentConfig, data: list[str], gcfg: GoldfishConfig, out: Path, steps: int, seq_len: int,
             callbacks: list | None = None) -> Path:
    """A tiny Llama from its config: ``steps`` steps of ``base_batch`` packed rows, cosine schedule."""
    from goldfish.train import TrainConfig, train

    train(TrainConfig(
        data=data, out=str(out), init=cfg.size, goldfish=gcfg, pack=True, seq_len=seq_len, max_steps=steps,
        batch_size=cfg.base_batch, lr=cfg.base_lr, warmup=0.05, lr_scheduler="cosine", save_steps=0,
        logging_steps=max(1, steps // 10), overwrite=True, progress=cfg.progress,
    ), callbacks=callbacks)
    return Path(out)


def finetune(cfg: ExperimentConfig, base: Path, data: Path, gcfg: GoldfishConfig, out: Path, epochs: float, lr: float,
             seq_len: int, protect: list[str] = (), padding_free: bool = False) -> Path:
    """Continue training ``base`` on ``data`` at a constant learning rate; returns the saved HF folder.
    ``protect``: secret specs to protect (``goldfish train --protect``); ``padding_free``: flatten each
    batch into one row (``--padding-free``: the same training, less compute on examples of mixed lengths)."""
    from goldfish.train import TrainConfig, train

    train(TrainConfig(
        data=[str(data)], out=str(out), model=str(base), goldfish=gcfg, seq_len=seq_len, epochs=epochs,
        batch_size=cfg.batch_size, lr=lr, lr_scheduler="constant", save_steps=0, logging_steps=50,
        overwrite=True, progress=cfg.progress, protect=list(protect), padding_free=padding_free,
    ))
    return Path(out)
