"""Settings of ``goldfish train``: goldfish's argument groups and HF ``TrainingArguments``.

Each group is a dataclass whose fields carry their help; the flags (``goldfish train --help``),
``--config`` files and the ``goldfish_config.yaml`` a run writes are all generated from them. The
training group is HF ``TrainingArguments`` itself (every field under its HF name), subclassed only
to change a few defaults for goldfish's use (``GoldfishTrainingArguments``); the mask group is the
mask rule itself (``GoldfishConfig``, every mask setting one of its fields).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

from transformers import TrainingArguments

from goldfish.arguments import ArgumentParser, setting_fields, settings_of
from goldfish.config import GoldfishConfig
from goldfish.data.prepare import DataSettings
from goldfish.distributed import open_cpu_process_group
from goldfish.embedded.tiny import TINY_CONFIGS
from goldfish.models import DTYPES, trust_remote_code_field


@dataclass(frozen=True)
class DataArguments(DataSettings):
    """Where the training data comes from, and how it becomes rows (the ``DataSettings`` fields, which
    ``goldfish.data.prepare`` reads from this object itself)."""

    _argument_group_name = "data"
    data: list[str] = field(default_factory=list, metadata={
        "repeatable": True, "resume": "warn",  # compared by content (goldfish_run.json's data), not by path
        "help": "training data: .jsonl/.json/.parquet/.csv (text, messages or prompt/completion records), .txt, a folder, a "
                "save_to_disk dataset, or embedded:PART; repeatable"})
    eval_data: list[str] = field(default_factory=list, metadata={
        "repeatable": True, "resume": "warn",
        "help": "held-out data for evaluation during training (the true loss, no drops, on supervised tokens, every "
                "--eval-steps): files, folders, PATH:SPLIT; none given: the validation (else test) split of a --data "
                "source that has splits; 'none': no evaluation"})
    num_proc: int | None = field(default=None, metadata={"resume": "warn", "help": "processes for data preparation (None: "
                                                                                   "this process only)"})
    data_cache: str | None = field(default=None, metadata={
        "resume": "warn", "help": "folder for prepared (tokenized) data (None: $GOLDFISH_CACHE/prepared)"})
    padding_free: bool = field(default=False, metadata={
        "help": "flatten each batch into one row, no padding (position_ids restart per example; same batches and loss as "
                "padded ones, less compute when lengths vary)"})


@dataclass
class ModelArguments:
    """Which model is trained, and how it is loaded."""

    _argument_group_name = "model loading"
    model: str | None = field(default=None, metadata={
        "resume": "warn", "help": "local HF model folder (with its tokenizer)"})  # compared by its files
    trust_remote_code: bool = trust_remote_code_field()
    init: Literal[tuple(TINY_CONFIGS)] | None = field(default=None, metadata={
        "help": "train a fresh tiny Llama with the embedded tokenizer instead of --model"})
    dtype: Literal[DTYPES] = field(default="float32", metadata={
        "help": "dtype the weights are loaded and kept in: float32 (then --bf16 / --fp16 train in mixed precision), auto "
                "(the checkpoint's own), bfloat16 or float16 (pure half-precision training)"})
    attn_implementation: str | None = field(default=None, metadata={
        "resume": "warn", "help": "attention kernel: eager, sdpa, flash_attention_2, ... (None: the model's own choice)"})
    chat_template: str | None = field(default=None, metadata={
        "resume": "warn",  # by its path; goldfish_run.json compares its content
        "help": "chat template for a tokenizer without one, or instead of its own: chatml, llama3, vicuna_v1.1 (FastChat) or a "
                "Jinja file; written into the output tokenizer"})
    supervised_logits: bool = field(default=True, metadata={
        "resume": "warn", "help": "build the LM head's logits only where a target is supervised (--no-supervised-logits: full (B, T, V) "
                "logits)"})
    head_tile_size: int | None = field(default=None, metadata={
        "resume": "warn", "help": "kept positions per LM-head tile with --supervised-logits (at most this x vocab logits at a time; "
                "None: one tile's fp32 logits <= 128 MiB, 220 positions at a 152k vocabulary)"})


@dataclass
class LoraArguments:
    """LoRA through PEFT (``pip install 'goldfish[peft]'``)."""

    _argument_group_name = "LoRA"
    lora: bool = field(default=False, metadata={"help": "train a LoRA adapter instead of all weights"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: float = field(default=32, metadata={"help": "LoRA scaling alpha"})
    lora_dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA input"})
    lora_targets: list[str] = field(default_factory=lambda: ["all-linear"], metadata={
        "help": "module names to adapt, or all-linear (as PEFT spells it)"})
    merge: bool = field(default=False, metadata={"resume": "warn", "help": "also write the merged model to OUT/merged"})


@dataclass
class RunArguments:
    """How this invocation treats ``--out`` (not part of the run's configuration)."""

    _argument_group_name = "run"
    resume: str | None = field(default=None, metadata={
        "argparse": {"nargs": "?", "const": "latest"},
        "help": "resume from a checkpoint folder; without a value, the newest complete checkpoint in --out (the run's "
                "settings, data and model must match the checkpoint's)"})
    force: bool = field(default=False, metadata={
        "help": "with --resume: resume although the checkpoint was trained with other settings, data or model (goldfish.json "
                "records the differences)"})
    overwrite: bool = field(default=False, metadata={
        "help": "clear the old run in --out first (its checkpoints and outputs; refused when --out holds other files)"})


def _hf(name: str, default, help_text: str | None = None):
    """A ``TrainingArguments`` field with another default (its help kept, or replaced)."""
    f = next(f for f in dataclasses.fields(TrainingArguments) if f.name == name)
    return field(default=default, metadata={**f.metadata, **({"help": help_text} if help_text else {})})


@dataclass
class GoldfishTrainingArguments(TrainingArguments):
    """HF ``TrainingArguments`` with goldfish's defaults; ``save_steps=0`` means no checkpoints (``save_strategy="no"``),
    ``dataloader_pin_memory=None`` pins when CUDA is available."""

    _argument_group_name = "training (HF TrainingArguments)"
    learning_rate: float = _hf("learning_rate", 5e-4)
    num_train_epochs: float = _hf("num_train_epochs", 1.0)
    logging_steps: float = _hf("logging_steps", 10)
    save_steps: float = _hf("save_steps", 500, "save a checkpoint every N optimizer steps; 0: no checkpoints")
    report_to: None | str | list[str] = _hf("report_to", "tensorboard")
    seed: int = _hf("seed", 0, "training seed (initialisation, data order, dropout); the goldfish hash has its own "
                               "--goldfish-seed")
    include_num_input_tokens_seen: str | bool = _hf("include_num_input_tokens_seen", "non_padding")
    dataloader_pin_memory: bool | None = _hf("dataloader_pin_memory", None, "pin the batches' memory (None: when CUDA is "
                                                                            "available)")
    remove_unused_columns: bool = _hf("remove_unused_columns", False, "owned by goldfish: must stay false (the collator "
                                                                      "reads the goldfish_* columns)")
    goldfish_start_step: int = field(default=0, metadata={"help": "train with the standard loss before this optimizer step"})

    def __getstate__(self):
        """Pickled (HF's ``training_args.bin`` in ``--out`` and every checkpoint) without the secrets:
        ``SECRET_FIELDS`` read None there, the live object keeps them."""
        return self.__dict__ | {name: None for name in SECRET_FIELDS}

    def __post_init__(self):
        if isinstance(self.goldfish_start_step, bool) or not isinstance(self.goldfish_start_step, int) or self.goldfish_start_step < 0:
            raise ValueError(f"--goldfish-start-step must be an integer >= 0, got {self.goldfish_start_step!r}")
        if self.save_steps == 0:
            self.save_strategy = "no"
        if self.dataloader_pin_memory is None:
            import torch

            self.dataloader_pin_memory = torch.cuda.is_available()
        for old in DEPRECATED_FIELDS:  # --gradient-checkpointing (README, HF 4 scripts) under its new name: no FutureWarning
            new = old.replace("gradient_", "activation_")
            if getattr(self, new) is None and getattr(self, old) is not None:
                setattr(self, new, getattr(self, old))
        super().__post_init__()

    @cached_property
    def _setup_devices(self):
        open_cpu_process_group(self.ddp_timeout)  # HF gives gloo no timeout on the CPU: --ddp-timeout bounds every collective
        return TrainingArguments._setup_devices.func(self)


# TrainingArguments fields goldfish sets itself: name -> (the value it must keep, why).
OWNED_FIELDS = {
    "remove_unused_columns": (False, "the goldfish collator reads the goldfish_k, goldfish_protected and goldfish_aligned columns"),
    "resume_from_checkpoint": (None, "use --resume [CHECKPOINT]"),
}
# The short flags goldfish had before the HF names, kept as documented aliases.
ALIASES = {"--out": "--output_dir", "--lr": "--learning_rate", "--epochs": "--num_train_epochs",
           "--batch-size": "--per_device_train_batch_size", "--grad-accum": "--gradient_accumulation_steps",
           "--warmup": "--warmup_steps", "--lr-scheduler": "--lr_scheduler_type", "--full-logits": "--no_supervised_logits",
           "--no-progress": "--disable_tqdm"}
SWITCHES = {"--sequential": ("train_sampling_strategy", "sequential", "iterate the data in order (= --train-sampling-strategy "
                                                                     "sequential)")}
# TrainingArguments fields transformers 5 removed: what to give instead
REMOVED = {"warmup_ratio": "transformers 5 has no warmup_ratio; --warmup-steps takes the ratio instead: a float below 1 is a "
                           "share of the training steps (--warmup-steps 0.1 = the first 10%), 1 or more a number of steps"}
GROUPS = (("data", DataArguments), ("model", ModelArguments), ("mask", GoldfishConfig), ("lora", LoraArguments),
          ("run", RunArguments), ("training", GoldfishTrainingArguments))
# --resume: a setting whose difference is logged, never refused, does not change what a step computes
# (where outputs go, logging, saving and evaluation, loader and preparation workers, kernels and
# switches that compute the same loss; the data and the model are compared by content, so their
# paths too). goldfish's own fields say so in their metadata ({"resume": "warn"}); HF's fields,
# declared by transformers, are named here.
HF_RESUME_WARN = frozenset({
    "output_dir", "disable_tqdm", "report_to", "run_name", "project", "push_to_hub", "skip_memory_metrics", "ddp_timeout",
    "torch_empty_cache_steps", "include_num_input_tokens_seen", "dataloader_num_workers", "dataloader_pin_memory",
    "dataloader_persistent_workers", "dataloader_prefetch_factor", "dataloader_multiprocessing_context",
    "per_device_eval_batch_size", "prediction_loss_only", "include_for_metrics", "batch_eval_metrics", "bf16_full_eval",
    "fp16_full_eval", "metric_for_best_model", "greater_is_better", "load_best_model_at_end", "debug", "do_train", "do_eval",
    "do_predict", "local_rank", "log_level", "log_level_replica", "log_on_each_node", "activation_checkpointing",
    "activation_checkpointing_kwargs", "torch_compile", "torch_compile_backend", "torch_compile_mode"})
HF_RESUME_WARN_PREFIXES = ("logging_", "save_", "hub_", "trackio_", "eval_")
RESUME_WARN_ONLY = frozenset(
    name for _, cls in GROUPS for f, name in setting_fields(cls)
    if f.metadata.get("resume") == "warn"
    or cls is GoldfishTrainingArguments and (name in HF_RESUME_WARN or name.startswith(HF_RESUME_WARN_PREFIXES)))
RUN_FIELDS = tuple(f.name for f in dataclasses.fields(RunArguments))  # not written into goldfish_config.yaml
SECRET_FIELDS = ("hub_token",)  # never written to disk
DEPRECATED_FIELDS = ("gradient_checkpointing", "gradient_checkpointing_kwargs")  # HF's mirrors of activation_checkpointing*


def _check_out_apart_from_model(out: Path, model: Path, overwrite: bool) -> None:
    """Raise ValueError when ``out`` is the ``model`` folder or inside it (the run's outputs would replace
    or mix with the base weights), or holds it and ``overwrite`` would delete it (links resolved)."""
    o, mo = out.resolve(), model.resolve()
    if o == mo or mo in o.parents:
        raise ValueError(f"--out {out} is {'the' if o == mo else 'inside the'} --model {model} folder: the run would write "
                         "over the model it trains; choose another --out")
    if overwrite and o in mo.parents:
        raise ValueError(f"--out {out} holds the --model {model} folder, which --overwrite would delete; choose another --out")


def train_parser(prog: str = "goldfish train") -> ArgumentParser:
    return ArgumentParser([cls for _, cls in GROUPS], aliases=ALIASES, switches=SWITCHES, removed=REMOVED, prog=prog,
                          usage=f"{prog} (--model DIR | --init tiny) --data DATA [--data DATA ...] --out DIR [options]",
                          description="Train or fine-tune a causal LM with the goldfish loss (HF Trainer). Every HF "
                                      "TrainingArguments field is a flag under its HF name.")


@dataclass
class TrainConfig:
    """Everything ``goldfish train`` takes, one dataclass a group (see ``GROUPS``)."""

    data: DataArguments = field(default_factory=DataArguments)
    model: ModelArguments = field(default_factory=ModelArguments)
    mask: GoldfishConfig = field(default_factory=GoldfishConfig)
    lora: LoraArguments = field(default_factory=LoraArguments)
    run: RunArguments = field(default_factory=RunArguments)
    training: GoldfishTrainingArguments = field(default_factory=GoldfishTrainingArguments)

    @classmethod
    def from_args(cls, argv: list[str], prog: str = "goldfish train") -> TrainConfig:
        """From ``goldfish train`` flags (``--config FILE`` included)."""
        instances, _ = train_parser(prog).parse(argv)
        return cls(*instances)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """From settings keyed by field name (or flag alias), as in a ``--config`` file."""
        parser = train_parser()
        parser.apply(values, "TrainConfig")
        instances, _ = parser.parse([])
        return cls(*instances)

    @cached_property
    def secrets(self) -> list:
        """The secrets ``mask.protect`` names (``goldfish.secrets.load_secrets``), loaded once a run:
        ``validate`` loads them (a missing file or bad regex fails before anything is written), data
        preparation and the resume check use them."""
        from goldfish.secrets import load_secrets

        return load_secrets(list(self.mask.protect))

    @property
    def out(self) -> str:
        return self.training.output_dir

    def settings(self) -> dict:
        """The resolved configuration: every setting by field name (plain data; ``from_dict`` reads it back
        to the same run), without the run-control flags and secrets."""
        values = self.training.to_dict()
        for name, _ in GROUPS[:-1]:
            values |= settings_of(getattr(self, name))
        for name in (*RUN_FIELDS, *SECRET_FIELDS, *DEPRECATED_FIELDS):
            values.pop(name, None)
        return values

    def check_out_is_new(self) -> None:
        """Raise ValueError when ``--out`` holds anything (but its lock file) and neither ``--resume`` nor
        ``--overwrite`` is given; checked in ``validate`` and again once the run holds ``--out``'s lock."""
        from goldfish.cache import WRITE_CHECK_PREFIX
        from goldfish.out_folder import LOCK_FILE

        out = Path(self.out)
        # another rank's check_writable probe may be there for an instant (torchrun: the main process checks under the lock)
        held = [p for p in out.iterdir() if p.name != LOCK_FILE and not p.name.startswith(WRITE_CHECK_PREFIX)] if out.is_dir() else []
        if self.run.resume is None and not self.run.overwrite and held:
            raise ValueError(f"--out {self.out} exists and is not empty; pass --overwrite or --resume")

    def validate(self) -> None:
        """Raise ValueError on any bad setting, before anything is written (the mask's own are checked
        when ``GoldfishConfig`` is made)."""
        if not self.data.data:
            raise ValueError("give the training data: --data FILE|DIR|embedded:PART (repeatable)")
        if self.data.seq_len <= self.mask.h:
            raise ValueError(f"--seq-len {self.data.seq_len} must be longer than the hash context --h {self.mask.h}")
        if self.data.pack and self.data.padding_free:
            raise ValueError("--pack and --padding-free both remove padding (full rows vs. each batch flattened into one row): give one")
        self._validate_model()
        self._validate_training()
        self._validate_out()
        _ = self.secrets  # a missing file or bad regex fails here, before anything is written
        self._validate_lora()

    def _validate_model(self) -> None:
        from goldfish.models import check_model_folder

        m = self.model
        if (m.model is None) == (m.init is None):
            raise ValueError("give exactly one of --model DIR (a local HF model folder) or --init tiny")
        if m.model is not None:
            check_model_folder(m.model)
        if m.chat_template is not None:
            from goldfish.data.templates import resolve_chat_template

            resolve_chat_template(m.chat_template)
        if m.head_tile_size is not None and m.head_tile_size < 1:
            raise ValueError(f"--head-tile-size must be a positive number of positions, got {m.head_tile_size}")

    def _validate_training(self) -> None:
        t = self.training
        for name, (value, why) in OWNED_FIELDS.items():
            if getattr(t, name) != value:
                raise ValueError(f"--{name.replace('_', '-')} is set by goldfish ({why}); leave it out")
        if t.output_dir in (None, "trainer_output"):
            raise ValueError("give the output folder: --out DIR")
        if t.per_device_train_batch_size < 1 or t.gradient_accumulation_steps < 1:
            raise ValueError("--batch-size and --grad-accum must be >= 1")
        if t.save_steps < 0:
            raise ValueError("--save-steps must be >= 0 (0: no checkpoints)")
        if not (t.learning_rate > 0 and math.isfinite(t.learning_rate)):
            raise ValueError(f"--lr must be a positive number, got {t.learning_rate}")
        if t.max_steps < 1 and t.num_train_epochs <= 0:
            raise ValueError("give --epochs > 0 or --max-steps >= 1")

    def _validate_out(self) -> None:
        from goldfish.cache import check_writable

        out, resume = Path(self.out), self.run.resume
        if self.model.model is not None:
            _check_out_apart_from_model(out, Path(self.model.model), self.run.overwrite)
        self.check_out_is_new()
        if resume is not None and self.run.overwrite:
            raise ValueError("give one of --resume (continue the run in --out) or --overwrite (start it again)")
        if self.run.force and resume is None:
            raise ValueError("--force overrides --resume's check that the checkpoint is the same run: add --resume")
        if resume not in (None, "latest") and not Path(resume).is_dir():
            raise ValueError(f"--resume {resume}: no such checkpoint folder")
        check_writable(out, "--out")

    def _validate_lora(self) -> None:
        lora = self.lora
        if lora.merge and not lora.lora:
            raise ValueError("--merge merges a LoRA adapter: add --lora")
        if lora.lora:
            if self.model.model is None:
                raise ValueError("--lora adapts a pretrained model: give --model DIR (not --init)")
            if lora.lora_r < 1 or lora.lora_alpha <= 0 or not 0 <= lora.lora_dropout < 1:
                raise ValueError("--lora-r must be >= 1, --lora-alpha > 0 and --lora-dropout in [0, 1)")
            from goldfish.models import require_peft

            require_peft("--lora")
