"""``goldfish train``: HF ``Trainer`` (``GoldfishTrainer``) on local data with the goldfish mask.

Runs the same on CPU, one GPU, or under ``accelerate launch`` / ``torchrun`` (DDP, FSDP through
accelerate). Everything is validated before ``out`` is touched. ``out`` ends up a normal HF model
folder (model, tokenizer; with ``lora``, a PEFT adapter folder, and ``merged/`` with ``merge``) plus
``goldfish.json`` (config, hash version, token counts), with ``checkpoint-N/`` folders and
TensorBoard logs in ``runs/``. Data preparation is ``goldfish.data.prepare`` (Arrow, cached).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from goldfish.cache import write_text_atomic
from goldfish.config import GoldfishConfig
from goldfish.hashing import HASH_VERSION
from goldfish.models import check_attends_within_documents, check_model_folder

logger = logging.getLogger("goldfish")


@dataclass
class TrainConfig:
    """Settings of ``goldfish train`` (the CLI flags have the same names)."""

    data: list[str]
    out: str
    model: str | None = None
    init: str | None = None
    text_field: str = "text"
    assistant_turns: str = "all"
    num_proc: int | None = None
    data_cache: str | None = None
    goldfish: GoldfishConfig = field(default_factory=GoldfishConfig)
    protect: list[str] = field(default_factory=list)  # secret specs (goldfish.secrets): "builtin" or files
    goldfish_start_step: int = 0
    pack: bool = False
    padding_free: bool = False
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
    lora: bool = False
    lora_r: int = 16
    lora_alpha: float = 32
    lora_dropout: float = 0.05
    lora_targets: list[str] = field(default_factory=lambda: ["all-linear"])
    merge: bool = False


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
    if cfg.pack and cfg.padding_free:
        raise ValueError("--pack and --padding-free both remove padding (full rows vs. each batch flattened into one row): give one")
    if cfg.assistant_turns not in ("all", "last"):
        raise ValueError(f"--assistant-turns must be 'all' or 'last', got {cfg.assistant_turns!r}")
    from goldfish.secrets import load_secrets

    load_secrets(cfg.protect)  # a missing file or bad regex fails here, before anything is written
    if cfg.merge and not cfg.lora:
        raise ValueError("--merge merges a LoRA adapter: add --lora")
    if cfg.lora:
        if cfg.model is None:
            raise ValueError("--lora adapts a pretrained model: give --model DIR (not --init)")
        if cfg.lora_r < 1 or cfg.lora_alpha <= 0 or not 0 <= cfg.lora_dropout < 1:
            raise ValueError("--lora-r must be >= 1, --lora-alpha > 0 and --lora-dropout in [0, 1)")
        from goldfish.models import require_peft

        require_peft("--lora")


def _load_tokenizer(cfg: TrainConfig):
    from transformers import AutoTokenizer

    if cfg.model is not None:
        tokenizer = AutoTokenizer.from_pretrained(cfg.model)
    else:
        from goldfish.embedded.tiny import load_embedded_tokenizer

        tokenizer = load_embedded_tokenizer()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _load_model(cfg: TrainConfig, tokenizer):
    from transformers import AutoModelForCausalLM, set_seed

    set_seed(cfg.goldfish.seed)
    if cfg.model is not None:
        # an absolute path, so a LoRA adapter's adapter_config.json names a base that can be found again
        model = AutoModelForCausalLM.from_pretrained(str(Path(cfg.model).resolve()))
    else:
        from goldfish.embedded.tiny import tiny_llama_config

        model = AutoModelForCausalLM.from_config(tiny_llama_config(tokenizer, cfg.init, max_positions=max(cfg.seq_len, 512)))
    if cfg.lora:
        from peft import LoraConfig, get_peft_model

        targets = cfg.lora_targets[0] if cfg.lora_targets == ["all-linear"] else cfg.lora_targets
        model = get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                                 target_modules=targets, task_type="CAUSAL_LM"))
    return model


def prepare_data(cfg: TrainConfig, tokenizer):
    """The training rows (an Arrow dataset) and their per-epoch token counts, cached (see goldfish.data.prepare)."""
    from goldfish.data.prepare import DataSettings, prepare_dataset
    from goldfish.secrets import load_secrets, secret_line

    settings = DataSettings(seq_len=cfg.seq_len, pack=cfg.pack, text_field=cfg.text_field, assistant_turns=cfg.assistant_turns,
                            protect=tuple(secret_line(s) for s in load_secrets(cfg.protect)))
    return prepare_dataset(cfg.data, tokenizer, settings, cfg.goldfish, num_proc=cfg.num_proc, progress=cfg.progress,
                           cache=cfg.data_cache)


def _completed_record(cfg: TrainConfig) -> dict | None:
    """With ``resume``: the saved ``goldfish.json`` record if the checkpoint already reached the end
    of the run (nothing left to train), else None."""
    from transformers.trainer_utils import get_last_checkpoint

    checkpoint = get_last_checkpoint(cfg.out) if cfg.resume == "latest" else cfg.resume
    if checkpoint is None:
        raise ValueError(f"--resume: no checkpoint-* folder in {cfg.out}")
    state_file = Path(checkpoint) / "trainer_state.json"
    record_file = Path(cfg.out) / "goldfish.json"
    if not state_file.is_file() or not record_file.is_file():
        return None
    state = json.loads(state_file.read_text())
    target = cfg.max_steps if cfg.max_steps > 0 else state.get("max_steps", 0)
    if state.get("global_step", 0) < target:
        return None
    logger.info("--resume: the run in %s is complete (step %d of %d); nothing to do", cfg.out, state["global_step"], target)
    return json.loads(record_file.read_text())


def train(cfg: TrainConfig, callbacks: list | None = None) -> dict:
    """Run training; returns the ``goldfish.json`` record. ``callbacks``: extra TrainerCallbacks.

    Resuming a run whose checkpoint already reached the end changes nothing and returns its record.
    """
    _validate(cfg)
    if cfg.resume is not None and (done := _completed_record(cfg)) is not None:
        return done
    import torch
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening, TrainingArguments

    from goldfish.integrations.hf import GoldfishCollator, GoldfishTrainer

    tokenizer = _load_tokenizer(cfg)
    if cfg.padding_free:
        base = DataCollatorWithFlattening(return_position_ids=True, separator_id=-100)
    else:
        base = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100)
        base = _WithoutAttentionMask(base) if cfg.pack else base
    collator = GoldfishCollator(base, cfg.goldfish, keep_full_labels=cfg.goldfish_start_step > 0)
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
    with args.main_process_first(desc="data preparation"):  # the others then load the main process's cache
        data = prepare_data(cfg, tokenizer)
    counts = data.counts
    model = _load_model(cfg, tokenizer)
    if cfg.pack or cfg.padding_free:
        check_attends_within_documents(model, "--pack" if cfg.pack else "--padding-free")
    trainer = GoldfishTrainer(
        model=model, args=args, train_dataset=data.train, data_collator=collator, processing_class=tokenizer,
        supervised_logits=cfg.supervised_logits, goldfish_start_step=cfg.goldfish_start_step, callbacks=callbacks,
    )
    start = time.time()
    resume = True if cfg.resume == "latest" else cfg.resume
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(cfg.out)
    if cfg.merge and trainer.is_world_process_zero():
        merged = trainer.model.merge_and_unload()
        merged.save_pretrained(Path(cfg.out) / "merged")
        tokenizer.save_pretrained(Path(cfg.out) / "merged")
    record = {
        "goldfish": cfg.goldfish.to_dict(),
        "hash_version": HASH_VERSION,
        "goldfish_start_step": cfg.goldfish_start_step,
        "tokens_per_epoch": {k: counts[k] for k in ("input_tokens", "supervised_targets", "dropped_targets", "kept_targets", "drop_rate")},
        "protection": _protection_record(cfg, counts),
        "examples": counts["examples"],
        "rows": counts["rows"],
        "prepared_data": str(data.path),
        "global_steps": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "train_loss": result.training_loss,
        "train_seconds": round(time.time() - start, 2),
        "settings": {k: v for k, v in asdict(cfg).items() if k != "goldfish"},
    }
    if trainer.is_world_process_zero():
        write_text_atomic(Path(cfg.out) / "goldfish.json", json.dumps(record, indent=2) + "\n")
    return record


def _protection_record(cfg: TrainConfig, counts: dict) -> dict | None:
    """What was protected (None when nothing was): the rule, the specs, protect_k and per-epoch counts."""
    if "protected_targets" not in counts:
        return None
    from goldfish.protect import PROTECT_VERSION

    return {"rule": PROTECT_VERSION, "protect": cfg.protect, "protect_k": cfg.goldfish.protect_k,
            "protected_targets": counts["protected_targets"], "protected_dropped": counts["protected_dropped"]}


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
