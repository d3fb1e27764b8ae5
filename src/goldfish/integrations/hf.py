"""Hugging Face integration: a collator wrapper, a Trainer subclass, and a ``datasets.map`` function.

Where the mask goes: into the ``labels`` before the loss, so that ``Trainer``'s
``num_items_in_batch`` (the supervised-token count of the whole accumulated, all-device batch)
counts only kept targets. Either at run time (``GoldfishCollator``) or at dataset-preparation time
(``goldfish_labels_map``, the route for TRL, which uses a pre-built ``labels`` column as is).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from transformers import Trainer

from goldfish.config import GoldfishConfig
from goldfish.data.tokenize import document_k
from goldfish.loss import causal_lm_loss, kept_head_loss, supervised_logits_loss
from goldfish.mask import apply_goldfish


# The features' mask inputs (see GoldfishCollator), taken out before the base collator runs.
GOLDFISH_FEATURES = ("goldfish_k", "goldfish_protected", "goldfish_aligned")
TRAINER_PROGRESS = "goldfish_trainer_state.json"  # in every checkpoint-N/ of GoldfishTrainer: see GoldfishTrainer


class GoldfishCollator:
    """Wrap any collator that returns ``input_ids`` and ``labels``; mask the labels.

    The hash reads the collated ``input_ids`` (prompt tokens labelled -100 included) and the
    document boundaries from ``position_ids`` (packing collators) or ``attention_mask`` (padding).
    Features may carry ``goldfish_k`` (one float for the whole feature, or one float per token;
    ``inf`` = never drop), ``goldfish_protected`` (the protection marker of ``goldfish.protect``,
    one int per token) and ``goldfish_aligned`` (goldfish-align-v1's representative hashes, one
    int per token, -1 = the token's own hash; ``goldfish.align``): they are taken out before the
    base collator runs and laid out like the batch (rows padded on the tokenizer's padding side, or
    concatenated when the base collator flattens the batch into one row).
    With ``keep_full_labels=True`` the unmasked labels are returned too, as ``goldfish_full_labels``
    (``GoldfishTrainer`` uses them before ``goldfish_start_step``).
    """

    def __init__(self, base_collator, config: GoldfishConfig, keep_full_labels: bool = False):
        self.base_collator = base_collator
        self.config = config
        self.keep_full_labels = keep_full_labels
        self.generator = torch.Generator().manual_seed(config.seed)  # the "random" strategy's draws

    def __call__(self, features):
        features = [dict(f) for f in features]  # never mutate the dataset's rows
        token_k = [f.pop("goldfish_k", None) for f in features]
        protected = [f.pop("goldfish_protected", None) for f in features]
        aligned = [f.pop("goldfish_aligned", None) for f in features]
        lengths = [len(f["input_ids"]) for f in features]
        batch = self.base_collator(features)
        if "labels" not in batch:
            raise ValueError("the base collator returned no 'labels'; goldfish masks labels (use mlm=False for causal LMs)")
        labels, ids = batch["labels"], batch["input_ids"]
        kwargs = {"generator": self.generator}
        if "position_ids" in batch:
            kwargs["position_ids"] = batch["position_ids"]
        elif "attention_mask" in batch:
            kwargs["attention_mask"] = batch["attention_mask"]
        if any(k is not None for k in token_k):
            rows = [k if isinstance(k, (list, tuple)) else [self.config.k if k is None else k] * n for k, n in zip(token_k, lengths)]
            kwargs["token_k"] = self._layout(rows, ids, torch.float64, math.inf)
        if any(p is not None for p in protected):
            kwargs["protected"] = self._layout([[0] * n if p is None else p for p, n in zip(protected, lengths)], ids, torch.int64, 0)
        if any(a is not None for a in aligned):
            kwargs["aligned"] = self._layout([[-1] * n if a is None else a for a, n in zip(aligned, lengths)], ids, torch.int64, -1)
        if self.keep_full_labels:
            batch["goldfish_full_labels"] = labels.clone()
        batch["labels"] = apply_goldfish(labels, ids, self.config, **kwargs)
        return batch

    def _layout(self, values: list, ids, dtype, pad) -> torch.Tensor:
        """Per-token feature values laid out like the collated ``ids`` (``pad`` where it pads)."""
        rows = [torch.tensor(v, dtype=dtype) for v in values]
        if ids.shape[0] == 1 and len(rows) > 1:  # flattened (padding-free) batch
            flat = torch.cat(rows)
            return torch.nn.functional.pad(flat, (0, ids.shape[1] - len(flat)), value=pad).unsqueeze(0)
        if ids.shape[0] != len(rows):
            raise ValueError(f"cannot lay out per-token goldfish features: {len(rows)} features but {ids.shape[0]} rows")
        left = getattr(getattr(self.base_collator, "tokenizer", None), "padding_side", "right") == "left"
        out = torch.full(tuple(ids.shape), pad, dtype=dtype)
        for i, r in enumerate(rows):
            if left:
                out[i, ids.shape[1] - len(r) :] = r
            else:
                out[i, : len(r)] = r
        return out


class GoldfishTrainer(Trainer):
    """``transformers.Trainer`` that computes the LM head only where a target is supervised, in tiles
    (``goldfish.loss.kept_head_loss``: at most ``head_tile_size x V`` logits at a time).

    Exact under gradient accumulation and DDP: the loss is the sum over kept targets divided by
    Trainer's ``num_items_in_batch``, the kept-target count of the whole global batch (collate with
    ``GoldfishCollator`` or prepare labels with ``goldfish_labels_map`` so that count is right).

    supervised_logits: False computes the usual full (B, T, V) logits instead.
    head_tile_size: kept positions per LM-head tile; None = ``goldfish.loss.default_tile_size(V)``
        (one tile's fp32 logits <= 128 MiB).
    goldfish_start_step: before this optimizer step the full (unmasked) labels are used; needs
        ``GoldfishCollator(..., keep_full_labels=True)``.
    eval_data_collator: the collator of evaluation batches (default: ``data_collator``); give one that
        drops nothing (the base collator, without the goldfish columns) for the true loss.
    ``state.supervised_targets_seen`` counts the kept targets trained on so far (all processes).
    ``evaluate`` returns the loss per supervised target of the eval set (see there), not HF's
    prediction loop (no logits, no ``compute_metrics``); ``evaluations`` lists every one with the
    tokens seen by then (step, epoch, input_tokens, supervised_tokens, eval_loss, eval_supervised_tokens).

    Resuming: every checkpoint holds ``TRAINER_PROGRESS`` (the supervised-target counter, the sum of
    the training losses so far, ``evaluations``), written before HF's files, so a resumed run counts
    on, lists the evaluations from before the interruption and reports the mean loss over all its
    steps (HF's ``training_loss`` alone covers the steps since the resume); it logs, evaluates and
    saves at this run's ``logging_steps``, ``eval_steps`` and ``save_steps`` (HF keeps the checkpoint's).
    """

    def __init__(self, *args, supervised_logits: bool = True, goldfish_start_step: int = 0, head_tile_size: int | None = None,
                 eval_data_collator=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.supervised_logits = supervised_logits
        self.goldfish_start_step = goldfish_start_step
        self.head_tile_size = head_tile_size
        self.eval_data_collator = eval_data_collator
        self.evaluations: list[dict] = []
        self._loss_before_resume: float | None = None  # the checkpoint's loss sum, when it has one
        self._head_loss = None  # the loss of the forward under way, set by compute_loss
        if supervised_logits:
            # A compute_loss_func makes Trainer count num_items_in_batch and treat the loss as
            # already normalised over the accumulated (and, by default, all-device) batch.
            self.compute_loss_func = self._supervised_loss

    def _supervised_loss(self, outputs, labels, num_items_in_batch=None):
        return self._head_loss(outputs.logits, num_items_in_batch)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = {k: v for k, v in inputs.items() if k != "goldfish_full_labels"}
        if not self.supervised_logits or "labels" not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        with kept_head_loss(model, inputs["labels"], tile_size=self.head_tile_size) as self._head_loss:
            try:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            finally:
                self._head_loss = None

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict:
        """``{prefix}_loss``: the mean NLL per supervised target over the eval set (sum over every
        target of every batch and process, divided by their count: exact, whatever the batching), and
        ``{prefix}_supervised_tokens``: that count. Logged (TensorBoard, ...) and passed to the
        callbacks as HF's ``evaluate`` does. Under DDP, accelerate may repeat a few examples to even
        out the processes' last batches."""
        collator = self.data_collator
        self.data_collator = self.eval_data_collator or collator
        try:
            loader = self.get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = collator
        model = self._wrap_model(self.model, training=False, dataloader=loader)
        was_training = model.training
        model.eval()
        total = torch.zeros((), dtype=torch.float64, device=self.args.device)
        count = torch.zeros((), dtype=torch.float64, device=self.args.device)
        with torch.no_grad():
            for batch in loader:
                batch = self._prepare_inputs(batch)
                labels = batch.pop("labels")
                batch.pop("goldfish_full_labels", None)
                with self.compute_loss_context_manager():
                    if self.supervised_logits:
                        loss_sum = supervised_logits_loss(model, labels=labels, num_items_in_batch=1, tile_size=self.head_tile_size, **batch)
                    else:
                        loss_sum = causal_lm_loss(model(**batch, use_cache=False).logits, labels, num_items_in_batch=1)
                total += loss_sum.double()
                count += (labels[..., 1:] != -100).sum()
        model.train(was_training)
        total, count = self.accelerator.reduce(torch.stack([total, count]), reduction="sum")
        metrics = {f"{metric_key_prefix}_loss": float(total / count.clamp(min=1)), f"{metric_key_prefix}_supervised_tokens": int(count)}
        self.evaluations.append({"step": self.state.global_step, "epoch": self.state.epoch, "input_tokens": self.state.num_input_tokens_seen,
                                 "supervised_tokens": getattr(self.state, "supervised_targets_seen", 0),
                                 "eval_loss": metrics[f"{metric_key_prefix}_loss"],
                                 "eval_supervised_tokens": metrics[f"{metric_key_prefix}_supervised_tokens"]})
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def _save_checkpoint(self, model, trial):
        from transformers.trainer_pt_utils import nested_gather
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        from goldfish.cache import write_text_atomic

        # the losses logged so far, the ones not logged yet (averaged over processes, as a log would), and those before a resume
        loss_sum = (self._loss_before_resume or 0.0) + self._total_loss_scalar
        loss_sum += nested_gather(self._tr_loss, self.args.parallel_mode).mean().item()
        if self.args.should_save:
            folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            progress = {"supervised_targets_seen": getattr(self.state, "supervised_targets_seen", 0), "train_loss_sum": loss_sum,
                        "evaluations": self.evaluations}
            write_text_atomic(folder / TRAINER_PROGRESS, json.dumps(progress, indent=2) + "\n")
        super()._save_checkpoint(model, trial)

    def _init_training_state(self, max_steps, num_update_steps_per_epoch, num_train_epochs, resume_from_checkpoint, trial):
        out = super()._init_training_state(max_steps, num_update_steps_per_epoch, num_train_epochs, resume_from_checkpoint, trial)
        self._loss_before_resume = None
        if resume_from_checkpoint is not None:
            self.state.compute_steps(self.args, max_steps)  # this run's logging, eval and save steps
            progress = Path(resume_from_checkpoint) / TRAINER_PROGRESS
            if progress.is_file():
                saved = json.loads(progress.read_text())
                self.state.supervised_targets_seen = saved["supervised_targets_seen"]
                self.evaluations = saved["evaluations"]
                self._loss_before_resume = saved["train_loss_sum"]
        return out

    def _finalize_training(self, trial, num_train_samples, start_time):
        if self._loss_before_resume is not None:  # the mean over every step of the run, not only those since the resume
            self._total_loss_scalar += self._loss_before_resume
            self._initial_global_step = 0
        return super()._finalize_training(trial, num_train_samples, start_time)

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batch_samples = []
        for _ in range(num_batches):
            try:
                batch_samples.append(next(epoch_iterator))
            except StopIteration:
                break
        started = self.state.global_step >= self.goldfish_start_step
        for batch in batch_samples:
            full = batch.pop("goldfish_full_labels", None)
            if full is not None and not started:
                batch["labels"] = full
            elif full is None and not started:
                raise ValueError("goldfish_start_step needs GoldfishCollator(..., keep_full_labels=True)")
        num_items = self._get_num_items_in_batch(batch_samples, device)
        if num_items is not None:  # kept targets of the global batch, for token-budget curves
            self.state.supervised_targets_seen = getattr(self.state, "supervised_targets_seen", 0) + int(num_items)
        return batch_samples, num_items


def goldfish_labels_map(config: GoldfishConfig, k_column: str = "goldfish_k", opt_out_column: str = "goldfish",
                        protected_column: str = "goldfish_protected", aligned_column: str = "goldfish_aligned"):
    """A ``datasets.map(..., batched=True)`` function that writes the masked ``labels`` column.

    Reads ``input_ids`` and ``labels`` (a copy of input_ids when absent); per example, an optional
    ``goldfish_k`` column overrides k (a number >= 2), ``goldfish == False`` opts the example out
    (``goldfish.data.tokenize.document_k``, the rule of ``goldfish train``; anything else raises), a
    ``goldfish_protected`` column (one int a token) marks protected spans and a ``goldfish_aligned``
    column (``with_aligned_column``: goldfish-align-v1) gives near-duplicates their representative's
    decisions. Each example is
    masked as one document (its context starts at its first token), with NumPy: pure, picklable,
    safe with ``num_proc``. Prompt tokens (label -100) stay -100 and still feed the hash context.
    """

    def fn(batch):
        out = []
        for i, ids in enumerate(batch["input_ids"]):
            ids = np.asarray(ids, dtype=np.int64)
            labels = np.asarray(batch["labels"][i] if "labels" in batch else ids, dtype=np.int64)
            settings = {"goldfish": batch[opt_out_column][i] if opt_out_column in batch else None,
                        "goldfish_k": batch[k_column][i] if k_column in batch else None}
            try:
                k = document_k(settings, config.k)
            except ValueError as e:
                raise ValueError(f"goldfish_labels_map: example {i} of a batch starting {ids[:8].tolist()}: {e}") from None
            token_k = None if k == config.k else np.full(ids.shape, float(k))
            protected = batch[protected_column][i] if protected_column in batch else None
            protected = None if protected is None else np.asarray(protected, dtype=np.int64)
            aligned = np.asarray(batch[aligned_column][i], dtype=np.int64) if aligned_column in batch else None
            out.append(apply_goldfish(labels, ids, config, token_k=token_k, protected=protected, aligned=aligned).tolist())
        return {"labels": out}

    return fn


def with_aligned_column(dataset, config: GoldfishConfig, num_proc: int | None = None):
    """``dataset`` (a ``datasets.Dataset`` of ``input_ids`` and ``labels``, one document an example,
    before ``goldfish_labels_map``) with the ``goldfish_aligned`` column of goldfish-align-v1
    (``goldfish.align``) over the whole dataset: the rule ``goldfish train --near-duplicates align``
    applies, for the TRL route. Signatures are mapped on ``num_proc`` workers; clustering runs here."""
    import tempfile

    from goldfish.data.near_duplicates import aligned_dataset

    with tempfile.TemporaryDirectory() as tmp:  # the signatures are needed only until the clusters are found
        aligned = aligned_dataset(dataset, config.h, config.seed, config.ignore_index, num_proc, f"{tmp}/signatures.arrow")
    return dataset.map(lambda example, i: {"goldfish_aligned": aligned.column(i, len(example["input_ids"])).tolist()},
                       with_indices=True, desc="near-duplicates: aligned column")
