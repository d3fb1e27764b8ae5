"""The two training recipes the experiments share, both ``goldfish train`` underneath."""

from __future__ import annotations

from pathlib import Path

from goldfish.config import GoldfishConfig
from goldfish.experiments.config import ExperimentConfig


def goldfish_config(cfg: ExperimentConfig, strategy: str, k: float | None = None,
                    protect_k: float = GoldfishConfig.protect_k) -> GoldfishConfig:
    return GoldfishConfig(strategy=strategy, k=cfg.k if k is None else k, h=cfg.h, seed=cfg.seed, protect_k=protect_k)


def train_settings(cfg: ExperimentConfig, gcfg: GoldfishConfig, out: Path, settings: dict) -> dict:
    """``goldfish train`` settings (``TrainConfig.from_dict``) with the experiment's seed (training and
    hash alike) and the given settings."""
    from goldfish.arguments import settings_of

    return {**settings_of(gcfg), "output_dir": str(out), "seed": cfg.seed, "save_steps": 0, "overwrite": True,
            "disable_tqdm": not cfg.progress, **settings}


def _train(cfg: ExperimentConfig, gcfg: GoldfishConfig, out: Path, settings: dict) -> Path:
    """``goldfish train`` with ``train_settings``."""
    from goldfish.train import train
    from goldfish.train_config import TrainConfig

    train(TrainConfig.from_dict(train_settings(cfg, gcfg, out, settings)))
    return Path(out)


def pretrain(cfg: ExperimentConfig, data: list[str], gcfg: GoldfishConfig, out: Path, steps: int, seq_len: int,
             eval_data: list[str] = (), eval_steps: int | None = None) -> Path:
    """A tiny Llama from its config: ``steps`` steps of ``base_batch`` packed rows, cosine schedule;
    with ``eval_data``, the held-out loss every ``eval_steps`` (``goldfish.json``'s ``eval``)."""
    return _train(cfg, gcfg, out, {
        "data": data, "init": cfg.size, "pack": True, "seq_len": seq_len, "max_steps": steps,
        "per_device_train_batch_size": cfg.base_batch, "learning_rate": cfg.base_lr, "warmup_steps": 0.05,
        "lr_scheduler_type": "cosine", "logging_steps": max(1, steps // 10), "eval_data": list(eval_data) or ["none"],
        "eval_steps": eval_steps})


def finetune_settings(base: Path, data: Path, epochs: float, lr: float, batch_size: int, seq_len: int, protect: list[str] = (),
                      padding_free: bool = False, near_duplicates: str = "off") -> dict:
    """The settings of ``finetune`` (beside ``train_settings``'), for recipes that train through ``goldfish sweep``."""
    return {"data": [str(data)], "model": str(base), "seq_len": seq_len, "num_train_epochs": epochs,
            "per_device_train_batch_size": batch_size, "learning_rate": lr, "lr_scheduler_type": "constant",
            "logging_steps": 50, "protect": list(protect), "padding_free": padding_free, "near_duplicates": near_duplicates}


def finetune(cfg: ExperimentConfig, base: Path, data: Path, gcfg: GoldfishConfig, out: Path, epochs: float, lr: float,
             batch_size: int, seq_len: int, protect: list[str] = (), padding_free: bool = False,
             near_duplicates: str = "off") -> Path:
    """Continue training ``base`` on ``data`` at a constant learning rate; returns the saved HF folder.
    ``protect``: secret specs to protect (``goldfish train --protect``); ``padding_free``: flatten each
    batch into one row (``--padding-free``: the same training, less compute on examples of mixed lengths);
    ``near_duplicates``: ``goldfish train --near-duplicates`` (off, or align: goldfish-align-v1)."""
    return _train(cfg, gcfg, out, finetune_settings(base, data, epochs, lr, batch_size, seq_len, protect, padding_free,
                                                    near_duplicates))
