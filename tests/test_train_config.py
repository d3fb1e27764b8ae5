"""``goldfish train``'s settings: flags generated from the dataclasses, every TrainingArguments field
reaching the Trainer, config files, the resolved configuration, the two seeds, model loading."""

import argparse
import dataclasses
import json
import typing
import warnings

import pytest
import torch
from helpers import micro_model
from transformers import TrainingArguments

from goldfish.arguments import setting_fields
from goldfish.cli import audit_parser, experiment_parser, main
from goldfish.experiments import RECIPES
from goldfish.integrations.hf import GoldfishTrainer
from goldfish.train_config import GROUPS, OWNED_FIELDS, TrainConfig, train_parser

BASE = ["--init", "micro", "--data", "embedded:targets", "--out", "/tmp/goldfish-flag-walk"]

# A value for the fields whose generic one (another choice, the other bool, default + 1) is not valid
# alone here; (flags, expected attribute value).
SPECIAL = {
    "bf16": (["--bf16", "--use-cpu"], True),  # HF: bf16 on a CPU-only machine needs use_cpu
    "bf16_full_eval": (["--bf16-full-eval", "--use-cpu"], True),
    "torch_compile_backend": (["--torch-compile-backend", "eager"], "eager"),
    "liger_kernel_config": (["--liger-kernel-config", '{"rope": true}'], {"rope": True}),
    "logging_steps": (["--logging-steps", "11"], 11),
    "save_steps": (["--save-steps", "501"], 501),
    "report_to": (["--report-to", "none"], []),
    "load_best_model_at_end": (["--load-best-model-at-end", "--eval-strategy", "steps"], True),
    "accelerator_config": (["--accelerator-config", '{"split_batches": true}'], True),
    "parallelism_config": (["--parallelism-config", '{"dp_shard_size": 1}'], 1),
    "dataloader_prefetch_factor": (["--dataloader-prefetch-factor", "3", "--dataloader-num-workers", "1"], 3),
    "debug": (["--debug", "underflow_overflow"], ["underflow_overflow"]),
    "output_dir": (["--output-dir", "/tmp/goldfish-flag-walk-2"], "/tmp/goldfish-flag-walk-2"),
}
READ = {"accelerator_config": lambda a: a.accelerator_config.split_batches,
        "parallelism_config": lambda a: a.parallelism_config and a.parallelism_config.dp_shard_size,
        "debug": lambda a: [d.value for d in a.debug]}
# Fields whose value needs what this machine lacks: the flag reaches HF's validation (or the Trainer), which says so.
NEEDS = {
    "tf32": (["--tf32"], "--tf32 requires Ampere", "an Ampere GPU"),
    "fsdp": (["--fsdp", "full_shard"], "fsdp only works in distributed training", "torchrun / accelerate launch"),
    "ddp_backend": (["--ddp-backend", "gloo"], "process group has not been initialized", "torchrun / accelerate launch"),
    "deepspeed": (["--deepspeed", "ds.json"], "deepspeed", "the deepspeed package"),
    "push_to_hub": (["--push-to-hub"], "Name or service not known", "the Hugging Face Hub (network)"),
}


def _generic(parser, name):
    action, default = parser._actions_by_dest[name], parser.get_default(name)
    if action.choices:
        value = next(c for c in action.choices if c != default)
        return [value], value
    if getattr(action.type, "__name__", "") == "string_to_bool":
        return ["false" if default else "true"], not default
    if action.type is int:
        return [str((default or 0) + 1)], (default or 0) + 1
    if action.type is float:
        return [str((default or 0) + 0.5)], (default or 0) + 0.5
    return ["x"], ["x"] if action.nargs == "+" else "x"


def _value(args, name):
    value = READ[name](args) if name in READ else getattr(args, name)
    return value.value if hasattr(value, "value") else value


def test_every_training_argument_reaches_the_trainer(tokenizer):
    warnings.simplefilter("ignore", FutureWarning)
    parser, model = train_parser(), micro_model(tokenizer)
    eval_rows = [{"input_ids": [1, 2, 3], "labels": [1, 2, 3]}]
    default = GoldfishTrainer(model=model, args=TrainConfig.from_args(BASE).training, eval_dataset=eval_rows).args
    checked = []
    for f in dataclasses.fields(TrainingArguments):
        if f.name in OWNED_FIELDS:
            with pytest.raises(ValueError, match="is set by goldfish"):
                TrainConfig.from_args([*BASE, f"--{f.name}", "true" if f.name == "remove_unused_columns" else "x"]).validate()
            continue
        if f.name in NEEDS:
            flags, message, _ = NEEDS[f.name]
            with pytest.raises(Exception, match=message):
                GoldfishTrainer(model=model, args=TrainConfig.from_args([*BASE, *flags]).training, eval_dataset=eval_rows)
            continue
        flags, expected = SPECIAL.get(f.name) or ([f"--{f.name.replace('_', '-')}", *_generic(parser, f.name)[0]],
                                                    _generic(parser, f.name)[1])
        args = GoldfishTrainer(model=model, args=TrainConfig.from_args([*BASE, *flags]).training, eval_dataset=eval_rows).args
        got = _value(args, f.name)
        assert got == expected, (f.name, flags, got, expected)
        if f.name not in ("gradient_checkpointing", "gradient_checkpointing_kwargs"):  # HF mirrors them both ways
            assert got != _value(default, f.name), f.name
        checked.append(f.name)
    assert len(checked) + len(OWNED_FIELDS) + len(NEEDS) == len(dataclasses.fields(TrainingArguments)) > 100


def _all_parsers():
    yield "train", train_parser()
    yield "audit", audit_parser()
    from goldfish.cli import _mask_parser, _plot_parser, eval_parser

    yield "mask", _mask_parser("goldfish mask")
    yield "eval", eval_parser()
    yield "plot", _plot_parser("goldfish plot")
    from goldfish.sweep import sweep_parser

    yield "sweep", sweep_parser()
    for name in RECIPES:
        yield f"experiment {name}", experiment_parser(name, f"goldfish experiment {name}")


@pytest.mark.parametrize("command,parser", list(_all_parsers()), ids=lambda x: x if isinstance(x, str) else "")
def test_no_default_or_choice_written_twice(command, parser):
    """Every flag's default and choices are its dataclass field's; every flag has help."""
    for dtype in parser.dataclass_types:
        hints = typing.get_type_hints(dtype)
        for f, name in setting_fields(dtype):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            assert parser.get_default(name) in (default, argparse.SUPPRESS), (command, name)  # SUPPRESS: the field's applies
            action = parser._actions_by_dest[name]
            literal = [a for a in (hints[f.name], *typing.get_args(hints[f.name])) if typing.get_origin(a) is typing.Literal]
            if literal and str not in typing.get_args(hints[f.name]):  # (HF's "str | None | Literal[False]" takes any str)
                assert list(action.choices) == list(typing.get_args(literal[0])), (command, f.name)
            assert action.help, (command, f.name)


def test_config_file_and_flags_give_equal_configurations(tmp_path):
    flags = ["--init", "micro", "--data", "embedded:targets", "--data", "embedded:validation", "--out", str(tmp_path / "o"),
             "--lr", "3e-4", "--k", "3", "--goldfish-seed", "7", "--seed", "5", "--lr-scheduler-type", "cosine", "--pack",
             "--protect", "builtin", "--gradient-checkpointing", "--report-to", "none", "--save-steps", "0"]
    (tmp_path / "run.yaml").write_text(
        "init: micro\ndata: [embedded:targets, embedded:validation]\noutput_dir: " + str(tmp_path / "o") + "\n"
        "learning_rate: 3.0e-4\nk: 3\ngoldfish_seed: 7\nseed: 5\nlr_scheduler_type: cosine\npack: true\nprotect: builtin\n"
        "activation_checkpointing: true\nreport_to: none\nsave_steps: 0\n")
    (tmp_path / "run.json").write_text(json.dumps({"init": "micro", "lr": "3e-4", "out": str(tmp_path / "o")}))
    a, b = TrainConfig.from_args(flags).settings(), TrainConfig.from_args(["--config", str(tmp_path / "run.yaml")]).settings()
    assert a == b and a["k"] == 3 and a["goldfish_seed"] == 7 and a["seed"] == 5 and a["save_strategy"] == "no"
    assert TrainConfig.from_dict(a).settings() == a  # the resolved configuration reads back to itself
    c = TrainConfig.from_args(["--config", str(tmp_path / "run.json"), "--data", "embedded:targets", "--lr", "1e-3"])
    assert c.training.learning_rate == 1e-3 and c.data.data == ["embedded:targets"] and c.model.init == "micro"
    d = TrainConfig.from_args(["--config", str(tmp_path / "run.yaml"), "--data", "embedded:background"])
    assert d.data.data == ["embedded:background"]  # a flag replaces the file's list


@pytest.mark.parametrize("content,message", [
    ("lerning_rate: 1\n", "unknown setting 'lerning_rate'; did you mean learning_rate"),
    ("strategy: fancy\n", "strategy: 'fancy' is not one of hash"),
    ("k: [1, 2\n", "not valid YAML"),
    ("- a\n- b\n", "must hold a mapping"),
    ("seq_len: many\n", "seq_len: invalid int value"),
    ("warmup_ratio: 0.1\n", "warmup_ratio: transformers 5 has no warmup_ratio; --warmup-steps takes the ratio instead: a float below 1"),
    # values of the wrong type get the flag's checks (issue 30): a number where an int goes, a list where one value does
    ("max_steps: 1.5\n", "max_steps: invalid int value: '1.5'"),
    ("k: [4, 8]\n", "k: takes one value, got the list [4, 8]"),
    ("pack: 5\n", "pack: Truthy value expected: got 5"),
    ("output_dir: 2024-01-01\n", "output_dir: datetime.date(2024, 1, 1) (date) is no setting value"),
    ("data: [[a.jsonl]]\n", "data: ['a.jsonl'] (list) is no setting value"),
])
def test_bad_config_files(tmp_path, capsys, content, message):
    (tmp_path / "c.yaml").write_text(content)
    assert main(["train", "--config", str(tmp_path / "c.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"goldfish train: error: --config {tmp_path / 'c.yaml'}") and message in err


def test_config_values_read_as_the_flags_would(tmp_path, capsys):
    """A TOML date is refused like YAML's; a number for a text setting is the flag's text (``data: 5`` = ``--data 5``)."""
    (tmp_path / "c.toml").write_text("init = 'micro'\nout = 2024-01-01\n")
    assert main(["train", "--config", str(tmp_path / "c.toml")]) == 2
    assert "output_dir: datetime.date(2024, 1, 1) (date) is no setting value" in capsys.readouterr().err
    (tmp_path / "d.yaml").write_text(f"init: micro\ndata: 5\nout: {tmp_path / 'o'}\nseed: 3\nbf16: false\nlr: 1\n")
    cfg = TrainConfig.from_args(["--config", str(tmp_path / "d.yaml")])
    assert cfg.data.data == ["5"] and cfg.training.seed == 3 and cfg.training.learning_rate == 1.0
    for argv in (["--config", str(tmp_path / "d.yaml")], ["--init", "micro", "--data", "5", "--out", str(tmp_path / "o")]):
        assert main(["train", *argv]) == 2
        assert "error: data source 5 does not exist" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_every_bad_flag_has_one_prefix(capsys):
    assert main(["train", "--nope"]) == 2
    assert main(["train", "--lr", "fast"]) == 2
    assert main(["audit", "--beams", "x"]) == 2
    assert main(["mask", "--strategy", "fancy"]) == 2
    err = capsys.readouterr().err
    assert "goldfish train: error: unrecognized arguments: --nope" in err
    assert "goldfish train: error: argument --learning_rate/--learning-rate/--lr: invalid float value: 'fast'" in err
    assert "goldfish audit: error: argument --beams/--beam: invalid int value: 'x'" in err
    assert "goldfish mask: error: argument --strategy: invalid choice: 'fancy'" in err
    assert main(["--version"]) == 0 and capsys.readouterr().out.startswith("goldfish 0.")
    assert main(["train", "--warmup-ratio", "0.1"]) == 2 and main(["train", "--warmup_ratio=0.1"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert err[-2].startswith("goldfish train: error: --warmup-ratio: transformers 5 has no warmup_ratio; --warmup-steps takes")
    assert err[-1].startswith("goldfish train: error: --warmup_ratio: ") and "a float below 1 is a share" in err[-1]


def test_short_flags_are_aliases():
    cfg = TrainConfig.from_args(["--init", "micro", "--data", "x", "--out", "o", "--lr", "2e-3", "--epochs", "3", "--batch-size", "2",
                                 "--grad-accum", "4", "--warmup", "0.1", "--lr-scheduler", "constant", "--seq-len", "99",
                                 "--full-logits", "--no-progress", "--sequential"])
    t = cfg.training
    assert (t.learning_rate, t.num_train_epochs, t.per_device_train_batch_size, t.gradient_accumulation_steps, t.warmup_steps,
            t.lr_scheduler_type.value, t.train_sampling_strategy, t.disable_tqdm, t.output_dir) == (
        2e-3, 3, 2, 4, 0.1, "constant", "sequential", True, "o")
    assert cfg.data.seq_len == 99 and cfg.model.supervised_logits is False
    (audit,), _ = audit_parser().parse(["--model", "a", "--model", "b", "--name", "x", "--name", "y", "--beam", "3", "--offsets", "0,16"])
    assert audit.models == ["a", "b"] and audit.names == ["x", "y"] and audit.beams == 3 and audit.offsets == [0, 16]


def test_groups_cover_every_flag():
    """Each dataclass field is a flag of exactly one group; the groups are the issue's list."""
    names = [name for _, cls in GROUPS for _, name in setting_fields(cls)]
    assert len(names) == len(set(names))
    assert [name for name, _ in GROUPS] == ["data", "model", "mask", "lora", "run", "training"]


@pytest.mark.slow
def test_training_arguments_from_flags_are_saved_and_the_run_repeats(tmp_path):
    """The issue's own check, then the written goldfish_config.yaml repeats the run."""
    flags = ["train", "--init", "micro", "--data", "embedded:targets", "--seq-len", "64", "--max-steps", "3", "--batch-size", "4",
             "--gradient-checkpointing", "--optim", "adamw_torch", "--max-grad-norm", "0.5", "--save-total-limit", "1",
             "--report-to", "none", "--lr-scheduler-type", "cosine", "--seed", "3", "--goldfish-seed", "0", "--save-steps", "2",
             "--no-progress"]
    assert main([*flags, "--out", str(tmp_path / "a")]) == 0
    saved = torch.load(tmp_path / "a" / "training_args.bin", weights_only=False)
    assert (saved.activation_checkpointing, saved.optim.value, saved.max_grad_norm, saved.save_total_limit, saved.report_to,
            saved.lr_scheduler_type.value, saved.seed) == (True, "adamw_torch", 0.5, 1, [], "cosine", 3)
    assert sorted(p.name for p in (tmp_path / "a").glob("checkpoint-*")) == ["checkpoint-3"]  # save_total_limit 1
    record = json.loads((tmp_path / "a" / "goldfish.json").read_text())
    assert record["seed"] == 3 and record["goldfish"]["seed"] == 0
    assert main(["train", "--config", str(tmp_path / "a" / "goldfish_config.yaml"), "--out", str(tmp_path / "b")]) == 0
    again = json.loads((tmp_path / "b" / "goldfish.json").read_text())
    assert again["tokens_per_epoch"] == record["tokens_per_epoch"] and again["train_loss"] == record["train_loss"]


def test_the_two_seeds(tmp_path, tokenizer):
    """--seed moves the training, not the mask; --goldfish-seed moves the mask."""
    from goldfish.train import prepare_data

    def counts(*extra):
        cfg = TrainConfig.from_args([*BASE, "--seq-len", "64", "--data-cache", str(tmp_path), *extra])
        return prepare_data(cfg, tokenizer).counts

    base, other_training, other_hash = counts(), counts("--seed", "9"), counts("--goldfish-seed", "9")
    assert base["dropped_targets"] == other_training["dropped_targets"]
    assert base["dropped_targets"] != other_hash["dropped_targets"]
    assert base["supervised_targets"] == other_hash["supervised_targets"]


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_attn_implementation_and_dtype_reach_the_model(tokenizer, tmp_path, attn, caplog):
    from goldfish.train import _load_model

    model = _load_model(TrainConfig.from_args([*BASE, "--attn-implementation", attn]), tokenizer)
    assert model.config._attn_implementation == attn and next(model.parameters()).dtype == torch.float32
    model.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    tokenizer.save_pretrained(tmp_path / "bf16")
    as_saved = ["--model", str(tmp_path / "bf16"), "--data", "x", "--out", "o"]
    assert next(_load_model(TrainConfig.from_args(as_saved), tokenizer).parameters()).dtype == torch.float32  # default
    assert next(_load_model(TrainConfig.from_args([*as_saved, "--dtype", "auto"]), tokenizer).parameters()).dtype == torch.bfloat16
    assert "training in pure bfloat16 (--dtype auto)" in caplog.text


@pytest.mark.parametrize("lora", [False, True])
def test_gradient_checkpointing_keeps_loss_and_gradients(tokenizer, lora):
    """Activation checkpointing (as --gradient-checkpointing turns it on) with the supervised-logits head:
    the same loss and gradients as without, also under LoRA."""
    from goldfish import GoldfishConfig, apply_goldfish, supervised_logits_loss

    ids = torch.randint(0, len(tokenizer), (2, 40), generator=torch.Generator().manual_seed(0))
    labels = apply_goldfish(ids.clone(), ids, GoldfishConfig())
    labels[:, :9] = -100

    def loss_and_grads(checkpointing):
        model = micro_model(tokenizer)
        if lora:
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear"))
        if checkpointing:
            model.gradient_checkpointing_enable()
        model.train()
        loss = supervised_logits_loss(model, ids, labels)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    (l0, g0), (l1, g1) = loss_and_grads(False), loss_and_grads(True)
    assert torch.allclose(l0, l1, rtol=1e-5) and g0.keys() == g1.keys() and g0
    for name in g0:
        assert torch.allclose(g0[name], g1[name], rtol=1e-4, atol=1e-7 * g0[name].abs().max().item()), name


def test_gradient_checkpointing_goes_by_its_new_name_without_a_warning():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        cfg = TrainConfig.from_args(["--init", "micro", "--data", "embedded:targets", "--out", "o", "--gradient-checkpointing"])
    assert cfg.training.activation_checkpointing is True and cfg.training.gradient_checkpointing is True


def test_another_ranks_write_probe_does_not_make_out_a_used_folder(tmp_path):
    """Under torchrun the main process checks --out again under its lock while another rank's
    check_writable may have its probe file there for an instant (the stress test's rank 0 once refused
    its own run so)."""
    from goldfish.cache import WRITE_CHECK_PREFIX

    out = tmp_path / "o"
    out.mkdir()
    (out / f"{WRITE_CHECK_PREFIX}x1y2").touch()
    (out / ".goldfish-lock").touch()
    cfg = TrainConfig.from_args(["--init", "micro", "--data", "embedded:targets", "--out", str(out)])
    cfg.check_out_is_new()
    (out / "notes.txt").touch()
    with pytest.raises(ValueError, match="exists and is not empty"):
        cfg.check_out_is_new()
