"""``goldfish train``: HF ``Trainer`` (``GoldfishTrainer``) on local data with the goldfish mask.

Runs the same on CPU, one GPU, or under ``accelerate launch`` / ``torchrun`` (DDP, FSDP through
accelerate). Everything is validated before ``out`` is touched. ``out`` ends up a normal HF model
folder (model, tokenizer) plus ``goldfish.json`` (config, hash version, token counts), with
``checkpoint-N/`` folders and TensorBoard logs in ``runs/``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from goldfish.cache import write_text_atomic
from goldfish.config import GoldfishConfig
from goldfish.hashing import HASH_VERSION
from goldfish.models import check_model_folder


@dataclass
class TrainConfig:
    """Settings of ``goldfish train`` (the CLI flags have the same names)."""

    data: list[str]
    out: str
    model: str | None = None
    init: str | None = None
    text_field: str = "text"
    goldfish: GoldfishConfig = field(default_factory=GoldfishConfig)
    goldfish_start_step: int = 0
    pack: bool = False
    seq_len: int = 512
    epochs: float = 1.0
    max_steps: int = -1
    lr: float = 5e-4
    batch_size: int = 8
    grad_accum: int = 1
    warmup: float = 0.0
    weight_decay: float = 0.0
    lr_scheduler: str = "linear"
    save_steps: int = 500  # 0: no checkpoints
    logging_steps: int = 10
    supervised_logits: bool = True
    resume: str | None = None
    overwrite: bool = False
    sequential: bool = False
    bf16: bool = False
    progress: bool = True


def _validate(cfg: TrainConfig) -> None:
    if (cfg.model is None) == (cfg.init is None):
        raise ValueError("give exactly one of --model DIR (a local HF model folder) or --init tiny")
    if cfg.model is not None:
        check_model_folder(cfg.model)
    if cfg.seq_len <= cfg.goldfish.h:
        raise ValueError(f"--seq-len {cfg.seq_len} must be longer than the hash context --h {cfg.goldfish.h}")
    for name in ("batch_size", "grad_accum", "logging_steps"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    if cfg.save_steps < 0:
        raise ValueError("--save-steps must be >= 0 (0: no checkpoints)")
    if cfg.lr <= 0 or not math.isfinite(cfg.lr):
        raise ValueError(f"--lr must be a positive number, got {cfg.lr}")
    if cfg.max_steps < 1 and cfg.epochs <= 0:
        raise ValueError("give --epochs > 0 or --max-steps >= 1")
    out = Path(cfg.out)
    if cfg.resume is None and out.exists() and any(out.iterdir()) and not cfg.overwrite:
        raise ValueError(f"--out {cfg.out} exists and is not empty; pass --overwrite or --resume")
    if cfg.resume not in (None, "latest") and not Path(cfg.resume).is_dir():
        raise ValueError(f"--resume {cfg.resume}: no such checkpoint folder")


def _load_model_and_tokenizer(cfg: TrainConfig):
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    set_seed(cfg.goldfish.seed)
    if cfg.model is not None:
        tokenizer = AutoTokenizer.from_pretrained(cfg.model)
        model = AutoModelForCausalLM.from_pretrained(cfg.model)
    else:
        from goldfish.experiments.tiny import load_embedded_tokenizer, tiny_llama_config

        tokenizer = load_embedded_tokenizer()
        model = AutoModelForCausalLM.from_config(tiny_llama_config(tokenizer, cfg.init, max_positions=max(cfg.seq_len, 512)))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def prepare_examples(cfg: TrainConfig, tokenizer) -> list[dict]:
    """Read, tokenize and split the training data into examples (one document or chunk each)."""
    from goldfish.data import build_examples, read_documents

    docs = [d for source in cfg.data for d in read_documents(source, cfg.text_field)]
    return build_examples(docs, tokenizer, cfg.seq_len, cfg.goldfish.k)


def token_counts(examples: list[dict], gcfg: GoldfishConfig) -> dict:
    """Per epoch: input tokens, supervised targets, and targets the mask drops (one draw for random).

    Counted on the unpacked examples: packing keeps each example's mask (its position_ids restart).
    """
    import numpy as np

    from goldfish.mask import goldfish_mask

    n_input = n_sup = n_drop = 0
    for ex in examples:
        ids = np.asarray(ex["input_ids"], dtype=np.int64)
        labels = np.asarray(ex["labels"])
        sup = labels[1:] != -100
        drop = goldfish_mask(ids, gcfg, labels=labels, token_k=np.asarray(ex["goldfish_k"]))[1:]
        n_input += len(ids)
        n_sup += int(sup.sum())
        n_drop += int((sup & drop).sum())
    return {"input_tokens": n_input, "supervised_targets": n_sup, "dropped_targets": n_drop,
            "kept_targets": n_sup - n_drop, "drop_rate": n_drop / max(n_sup, 1)}


def train(cfg: TrainConfig, callbacks: list | None = None) -> dict:
    """Run training; returns the ``goldfish.json`` record. ``callbacks``: extra TrainerCallbacks."""
    _validate(cfg)
    import torch
    from transformers import DataCollatorForSeq2Seq, TrainingArguments

    from goldfish.integrations.hf import GoldfishCollator, GoldfishTrainer

    from goldfish.data import pack_examples

    model, tokenizer = _load_model_and_tokenizer(cfg)
    examples = prepare_examples(cfg, tokenizer)
    rows = pack_examples(examples, cfg.seq_len, tokenizer.pad_token_id) if cfg.pack else examples
    base = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100)
    collator = GoldfishCollator(_WithoutAttentionMask(base) if cfg.pack else base, cfg.goldfish,
                                keep_full_labels=cfg.goldfish_start_step > 0)
    args = TrainingArguments(
        output_dir=cfg.out,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.lr,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup,
        weight_decay=cfg.weight_decay,
        logging_steps=cfg.logging_steps,
        save_strategy="steps" if cfg.save_steps else "no",
        save_steps=cfg.save_steps or 500,
        report_to=["tensorboard"],
        seed=cfg.goldfish.seed,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=not cfg.progress,
        train_sampling_strategy="sequential" if cfg.sequential else "random",
        bf16=cfg.bf16,
        include_num_input_tokens_seen="non_padding",
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    trainer = GoldfishTrainer(
        model=model, args=args, train_dataset=rows, data_collator=collator, processing_class=tokenizer,
        supervised_logits=cfg.supervised_logits, goldfish_start_step=cfg.goldfish_start_step, callbacks=callbacks,
    )
    start = time.time()
    resume = True if cfg.resume == "latest" else cfg.resume
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(cfg.out)
    record = {
        "goldfish": cfg.goldfish.to_dict(),
        "hash_version": HASH_VERSION,
        "goldfish_start_step": cfg.goldfish_start_step,
        "tokens_per_epoch": token_counts(examples, cfg.goldfish),
        "examples": len(examples),
        "rows": len(rows),
        "global_steps": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "train_loss": result.training_loss,
        "train_seconds": round(time.time() - start, 2),
        "settings": {k: v for k, v in asdict(cfg).items() if k != "goldfish"},
    }
    if trainer.is_world_process_zero():
        write_text_atomic(Path(cfg.out) / "goldfish.json", json.dumps(record, indent=2) + "\n")
    return record


class _WithoutAttentionMask:
    """Packed rows: drop the all-ones attention mask so HF models attend within documents only
    (they build a block-diagonal mask from position_ids resets when attention_mask is None)."""

    def __init__(self, base):
        self.base = base
        self.tokenizer = getattr(base, "tokenizer", None)

    def __call__(self, features):
        batch = self.base(features)
        batch.pop("attention_mask", None)
        return batch
