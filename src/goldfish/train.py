"""``goldfish train``: HF ``Trainer`` (``GoldfishTrainer``) on local data with the goldfish mask.

Runs the same on CPU, one GPU, or under ``accelerate launch`` / ``torchrun`` (DDP, FSDP through
accelerate). Everything is validated before ``out`` is touched. ``out`` ends up a normal HF model
folder (model, tokenizer; with ``lora``, a PEFT adapter folder, and ``merged/`` with ``merge``) plus
``goldfish.json`` (config, hash version, token counts), with ``checkpoint-N/`` folders and
TensorBoard logs in ``runs/``. Data preparation is ``goldfish.data.prepare`` (Arrow, cached).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import time
from pathlib import Path

from transformers import TrainerCallback

from goldfish.cache import write_text_atomic
from goldfish.checkpoints import check_weights_fit
from goldfish.hashing import HASH_VERSION
from goldfish.models import check_attends_within_documents, from_pretrained, torch_dtype
from goldfish.out_folder import clear_outputs, out_lock, outputs_to_clear
from goldfish.resume import resume_point, run_identity
from goldfish.saving import RunRecorder
from goldfish.train_config import TrainConfig

logger = logging.getLogger("goldfish")
CONFIG_FILE = "goldfish_config.yaml"  # the run's resolved configuration: goldfish train --config OUT/goldfish_config.yaml repeats it


def _load_tokenizer(cfg: TrainConfig):
    from transformers import AutoTokenizer

    if cfg.model.model is not None:
        tokenizer = from_pretrained(AutoTokenizer, cfg.model.model, trust_remote_code=cfg.model.trust_remote_code)
    else:
        from goldfish.embedded.tiny import load_embedded_tokenizer

        tokenizer = load_embedded_tokenizer()
    if cfg.model.chat_template is not None:
        from goldfish.data.templates import apply_chat_template

        added = apply_chat_template(tokenizer, cfg.model.chat_template)
        logger.info("chat template: %s%s", cfg.model.chat_template, f" (added the tokens {', '.join(added)})" if added else "")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _load_model(cfg: TrainConfig, tokenizer):
    import torch
    from transformers import AutoModelForCausalLM, set_seed

    m, lora = cfg.model, cfg.lora
    set_seed(cfg.training.seed)
    kwargs = {"dtype": torch_dtype(m.dtype)} | ({"attn_implementation": m.attn_implementation} if m.attn_implementation else {})
    if m.model is not None:
        # an absolute path, so a LoRA adapter's adapter_config.json names a base that can be found again
        model = from_pretrained(AutoModelForCausalLM, str(Path(m.model).resolve()), trust_remote_code=m.trust_remote_code,
                                **kwargs)
    else:
        from goldfish.embedded.tiny import tiny_llama_config

        config = tiny_llama_config(tokenizer, m.init, max_positions=max(cfg.data.seq_len, 512))
        model = AutoModelForCausalLM.from_config(config, **kwargs)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:  # a chat template's markers were added
        model.resize_token_embeddings(len(tokenizer))
    if m.chat_template is not None:
        _stop_at_end_of_turn(model, tokenizer, m.chat_template)
    dtype = next(model.parameters()).dtype
    logger.info("model: %s in %s, attention %s", m.model or f"a fresh {m.init} Llama", str(dtype).removeprefix("torch."),
                model.config._attn_implementation)
    if dtype != torch.float32 and not (cfg.training.bf16 or cfg.training.fp16):
        logger.warning("training in pure %s (--dtype %s): the optimizer updates %s weights; for mixed precision load "
                       "float32 weights (--dtype float32) and add --bf16", str(dtype).removeprefix("torch."), m.dtype,
                       str(dtype).removeprefix("torch."))
    if lora.lora:
        from peft import LoraConfig, get_peft_model

        targets = lora.lora_targets[0] if lora.lora_targets == ["all-linear"] else lora.lora_targets
        model = get_peft_model(model, LoraConfig(r=lora.lora_r, lora_alpha=lora.lora_alpha, lora_dropout=lora.lora_dropout,
                                                 target_modules=targets, task_type="CAUSAL_LM"))
    return model


def _stop_at_end_of_turn(model, tokenizer, template: str) -> None:
    """Generation (of the saved model) stops at a named template's end-of-turn marker, as at EOS."""
    from goldfish.data.templates import END_OF_TURN

    if template not in END_OF_TURN:
        return
    stop = model.generation_config.eos_token_id
    stop = [] if stop is None else [stop] if isinstance(stop, int) else list(stop)
    model.generation_config.eos_token_id = sorted({*stop, tokenizer.convert_tokens_to_ids(END_OF_TURN[template])})


def prepare_data(cfg: TrainConfig, tokenizer):
    """The training rows (an Arrow dataset) and their per-epoch token counts, cached (see goldfish.data.prepare)."""
    from goldfish.data.prepare import prepare_dataset

    return prepare_dataset(cfg.data.data, tokenizer, cfg.data, cfg.mask, cfg.secrets, num_proc=cfg.data.num_proc,
                           progress=not cfg.training.disable_tqdm, cache=cfg.data.data_cache)


def _completed_record(cfg: TrainConfig, checkpoint: Path) -> dict | None:
    """The saved ``goldfish.json`` record if the resumed ``checkpoint`` already reached the end of
    the run (nothing left to train), else None."""
    state_file = Path(checkpoint) / "trainer_state.json"
    record_file = Path(cfg.out) / "goldfish.json"
    if not state_file.is_file() or not record_file.is_file():
        return None
    state = json.loads(state_file.read_text())
    target = cfg.training.max_steps if cfg.training.max_steps > 0 else state.get("max_steps", 0)
    if state.get("global_step", 0) < target:
        return None
    logger.info("--resume: the run in %s is complete (step %d of %d); nothing to do", cfg.out, state["global_step"], target)
    return json.loads(record_file.read_text())


def train(cfg: TrainConfig, callbacks: list | None = None) -> dict:
    """Run training; returns the ``goldfish.json`` record. ``callbacks``: extra TrainerCallbacks.

    Resuming a run whose checkpoint already reached the end changes nothing and returns its record.
    ``--resume``: see ``goldfish.resume``; ``--overwrite``: ``goldfish.out_folder``. One run at a time writes into
    ``out``: the main process holds ``out_lock`` (another run's raises ValueError naming its pid).
    """
    cfg.validate()
    # one run writes into --out at a time: its main process holds the lock, and checks --out again under it
    main = cfg.training.process_index == 0
    with out_lock(cfg.out) if main else contextlib.nullcontext():
        if main:
            cfg.check_out_is_new()
        with _progress_bars(not cfg.training.disable_tqdm):
            return _train(cfg, callbacks)


@contextlib.contextmanager
def _progress_bars(shown: bool):
    """transformers' own bars (e.g. "Writing model shards") off while ``shown`` is False, restored after."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    if not shown:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was and not shown:
            hf_logging.enable_progress_bar()


def _diverged(what: str, step: int) -> ValueError:
    return ValueError(f"training diverged: {what} at step {step}; nothing was saved as the final model (lower --lr, or "
                      "check the data; --max-grad-norm clips the updates)")


def _check_finite(model, train_loss: float, step: int) -> None:
    """ValueError when the run's mean loss or any weight is not finite (a run that diverged: --lr 1e6
    ended rc 0 with every saved weight NaN). One pass over the weights, once, before the final save."""
    import torch

    if not math.isfinite(train_loss):
        raise _diverged(f"the mean training loss is {train_loss}", step)
    bad = next((name for name, p in model.named_parameters() if not torch.isfinite(p).all()), None)
    if bad is not None:
        raise _diverged(f"the weight {bad} is not finite", step)


class _StopOnNonFinite(TrainerCallback):
    """Stop at the first logged loss or gradient norm that is not finite, rather than train on NaNs."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key in ("loss", "grad_norm"):
            if isinstance(value := (logs or {}).get(key), float) and not math.isfinite(value):
                raise _diverged(f"the logged {key} is {value}", state.global_step)


def _train(cfg: TrainConfig, callbacks: list | None) -> dict:
    from goldfish.integrations.hf import GoldfishTrainer

    resume = resume_point(cfg) if cfg.run.resume is not None else None
    if resume is not None and (done := _completed_record(cfg, resume.checkpoint)) is not None:
        return done
    old_outputs = outputs_to_clear(cfg.out) if cfg.run.overwrite else []
    tokenizer = _load_tokenizer(cfg)
    base, collator = _collators(cfg, tokenizer)
    data, held_out, eval_data = _prepare(cfg, tokenizer)
    model = _load_model(cfg, tokenizer)
    if cfg.data.pack or cfg.data.padding_free:
        check_attends_within_documents(model, "--pack" if cfg.data.pack else "--padding-free")
    if resume is not None:
        check_weights_fit(resume.checkpoint, model)
    args = cfg.training
    if eval_data is not None and args.eval_strategy == "no":  # --eval-data alone: evaluate every --eval-steps
        args = dataclasses.replace(args, eval_strategy="steps")
    if args.should_save:
        clear_outputs(old_outputs)
    recorder = RunRecorder(run_identity(cfg, data.counts["sources"], data.path.name))
    trainer = GoldfishTrainer(
        model=model, args=args, train_dataset=data.train, data_collator=collator, processing_class=tokenizer,
        supervised_logits=cfg.model.supervised_logits, goldfish_start_step=args.goldfish_start_step,
        head_tile_size=cfg.model.head_tile_size,
        callbacks=[*(callbacks or []), recorder, _StopOnNonFinite()], eval_dataset=None if eval_data is None else eval_data.train,
        eval_data_collator=_WithoutGoldfishColumns(base),
    )
    start = time.time()
    result = _fit(cfg, trainer, recorder, resume, eval_data is not None)
    if cfg.lora.merge and trainer.is_world_process_zero():
        merged = trainer.model.merge_and_unload()
        merged.save_pretrained(Path(cfg.out) / "merged")
        tokenizer.save_pretrained(Path(cfg.out) / "merged")
    record = _record(cfg, trainer, result, data, (held_out, eval_data), resume, time.time() - start)
    if trainer.is_world_process_zero():
        import yaml

        write_text_atomic(Path(cfg.out) / CONFIG_FILE, yaml.safe_dump(record["settings"], sort_keys=False))
        write_text_atomic(Path(cfg.out) / "goldfish.json", json.dumps(record, indent=2) + "\n")
    return record


def _collators(cfg: TrainConfig, tokenizer):
    """(the base collator: padded rows, packed rows without an attention mask, or flattened batches;
    the goldfish collator around it)."""
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening

    from goldfish.integrations.hf import GoldfishCollator

    if cfg.data.padding_free:
        base = DataCollatorWithFlattening(return_position_ids=True, separator_id=-100)
    else:
        base = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100)
        base = _WithoutAttentionMask(base) if cfg.data.pack else base
    return base, GoldfishCollator(base, cfg.mask, keep_full_labels=cfg.training.goldfish_start_step > 0)


def _prepare(cfg: TrainConfig, tokenizer):
    """(the training rows, the eval sources, their rows or None), prepared by the main process first
    (the others then load its cache); what they hold is logged, and what the chat template left out warned of."""
    from goldfish.data.chat import drop_warnings

    with cfg.training.main_process_first(desc="data preparation"):
        data = prepare_data(cfg, tokenizer)
        held_out = eval_sources(cfg)
        eval_data = prepare_eval_data(cfg, held_out, tokenizer)
    if (nd := data.counts.get("near_duplicates")) is not None:
        logger.info("near-duplicates (%s): %s (their drops follow their representatives')", nd["rule"], near_duplicates_line(nd))
    if cfg.training.process_index == 0:
        template = cfg.model.chat_template
        owner = f"{template} (--chat-template)" if template else f"of {cfg.model.model or 'the embedded tokenizer'}"
        for line in drop_warnings(data.counts["template_drops"], owner):
            logger.warning(line)
        for line in secret_lines(cfg.secrets, data.counts["secret_spans"]):
            (logger.warning if "protects nothing" in line else logger.info)(line)
        for line in [] if eval_data is None else eval_overlap_warnings(data.counts["sources"], eval_data.counts["sources"]):
            logger.warning(line)
    return data, held_out, eval_data


def secret_lines(secrets, spans: list[int]) -> list[str]:
    """One log line with the occurrences each --protect secret has in the training records, and a
    warning line for each secret of a file that occurs in none (a typo, another spelling: it protects
    nothing; a built-in detector that finds nothing is not one)."""
    from goldfish.secrets import is_detector

    if not secrets:
        return []
    found = ", ".join(f"{s.name!r} {n}" for s, n in zip(secrets, spans))
    return [f"protect: occurrences in the training records: {found}",
            *(f"protect: secret {s.name!r} protects nothing: it occurs in none of the training records (a typo, or "
              "another spelling than the data's?)" for s, n in zip(secrets, spans) if n == 0 and not is_detector(s))]


def eval_overlap_warnings(train: list[dict], held_out: list[dict]) -> list[str]:
    """One line an eval source that holds content of a training source (``source_identity``s of
    each): its loss then measures recall of trained text, not the held-out loss it is reported as."""
    from goldfish.data.sources import shared_content

    lines = []
    for e in held_out:
        for t in train:
            if n := shared_content(t, e):
                what = f"{n} of its {len(e['files'])} files" if "files" in e else "its content"
                lines.append(f"--eval-data {e['source']} shares {what} with the training data {t['source']}: its loss "
                             "measures how well the model recalls its training data, not a held-out loss; give held-out "
                             "data (e.g. PATH:test)")
    return lines


def _fit(cfg: TrainConfig, trainer, recorder, resume, evaluate: bool):
    """Train (from ``resume``'s checkpoint), evaluate the final model when ``evaluate`` and it was not
    yet, and save it into ``--out`` unless the run diverged; a full disk reads as such."""
    with recorder.full_disk_reported(cfg.out):
        result = trainer.train(resume_from_checkpoint=None if resume is None else str(resume.checkpoint))
        if evaluate and (not trainer.evaluations or trainer.evaluations[-1]["step"] != trainer.state.global_step):
            trainer.evaluate()  # the final model's held-out loss
        _check_finite(trainer.model, result.training_loss, trainer.state.global_step)
        trainer.save_model(cfg.out)
    return result


def _record(cfg: TrainConfig, trainer, result, data, evaluated: tuple, resume, seconds: float) -> dict:
    """The run's ``goldfish.json``: the mask rule, the token counts, the training's outcome, the settings."""
    counts, (held_out, eval_data) = data.counts, evaluated
    return {
        "goldfish": cfg.mask.to_dict(),
        "hash_version": HASH_VERSION,
        "goldfish_start_step": cfg.training.goldfish_start_step,
        "seed": cfg.training.seed,
        "tokens_per_epoch": {k: counts[k] for k in ("input_tokens", "supervised_targets", "dropped_targets", "kept_targets", "drop_rate")},
        "protection": _protection_record(cfg, counts),
        "near_duplicates": counts.get("near_duplicates"),
        "documents": counts["documents"],
        "template_drops": counts["template_drops"],
        "examples": counts["examples"],
        "rows": counts["rows"],
        "prepared_data": str(data.path),
        "global_steps": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "train_loss": result.training_loss,
        "supervised_tokens_seen": getattr(trainer.state, "supervised_targets_seen", 0),
        "train_seconds": round(seconds, 2),
        "eval": trainer.evaluations,
        "eval_data": None if eval_data is None else {"sources": held_out, "prepared_data": str(eval_data.path),
                                                     "supervised_targets": eval_data.counts["supervised_targets"]},
        "settings": cfg.settings(),
        "resumed": None if resume is None else resume.record,
    }


def near_duplicates_line(nd: dict) -> str:
    """``goldfish.json``'s ``near_duplicates`` in words: clusters, passages, aligned targets."""
    return f"{nd['clusters']} clusters of {nd['passages_clustered']} passages, {nd['aligned_targets']} aligned targets"


def eval_sources(cfg: TrainConfig) -> list[str]:
    """The eval data: ``--eval-data`` as given ('none': nothing), else the validation (else test) split
    of the first training source that has splits (a DatasetDict or hub-style folder), else nothing."""
    from goldfish.data.sources import resolve_source

    if cfg.data.eval_data == ["none"]:
        return []
    if cfg.data.eval_data:
        return list(cfg.data.eval_data)
    for spec in cfg.data.data:
        src = resolve_source(spec)
        held = next((s for s in ("validation", "test") if s in src.splits and s != src.split), None)
        if held is not None:
            logger.info("eval data: %s:%s, the held-out split of --data %s (--eval-data to choose, --eval-data none for no "
                        "evaluation)", src.path, held, spec)
            return [f"{src.path}:{held}"]
    return []


def prepare_eval_data(cfg: TrainConfig, sources: list[str], tokenizer):
    """The eval rows of ``sources`` (``eval_sources``), prepared as the training rows are, nothing
    dropped or protected; None without sources."""
    from goldfish.config import GoldfishConfig
    from goldfish.data.prepare import prepare_dataset

    if not sources:
        return None
    return prepare_dataset(sources, tokenizer, cfg.data, GoldfishConfig(strategy="none"), num_proc=cfg.data.num_proc,
                           progress=not cfg.training.disable_tqdm, cache=cfg.data.data_cache)


class _WithoutGoldfishColumns:
    """The base collator on features without their goldfish columns: batches with every label kept."""

    def __init__(self, base):
        from goldfish.integrations.hf import GOLDFISH_FEATURES

        self.base = base
        self.columns = GOLDFISH_FEATURES

    def __call__(self, features):
        return self.base([{k: v for k, v in f.items() if k not in self.columns} for f in features])


def _protection_record(cfg: TrainConfig, counts: dict) -> dict | None:
    """What was protected (None when nothing was): the rule, the specs, protect_k, per-epoch counts and
    each run secret's occurrences in the records (in the order of the specs' secrets; counts only)."""
    if "protected_targets" not in counts:
        return None
    from goldfish.protect import PROTECT_VERSION

    return {"rule": PROTECT_VERSION, "protect": list(cfg.mask.protect), "protect_k": cfg.mask.protect_k,
            "protected_targets": counts["protected_targets"], "protected_dropped": counts["protected_dropped"],
            "occurrences_per_secret": counts["secret_spans"]}


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
