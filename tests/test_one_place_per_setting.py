"""A mask setting is one field of ``GoldfishConfig`` and reaches every place through it: the
``goldfish train`` flags, a ``--config`` file, the resolved ``goldfish_config.yaml``, the ``--resume``
check and ``goldfish.json``. Every check below is generated from the fields, so a field added to
``GoldfishConfig`` is checked (and must pass) without an edit here."""

import dataclasses
import json
import typing

import pytest
import yaml

from goldfish.arguments import setting_fields
from goldfish.cli import main
from goldfish.config import GoldfishConfig
from goldfish.resume import run_differences, run_identity
from goldfish.train_config import RESUME_WARN_ONLY, TrainConfig, train_parser

BASE = ["--init", "micro", "--data", "embedded:targets", "--seq-len", "64"]
FIELDS = setting_fields(GoldfishConfig)


def _other_value(f: dataclasses.Field):
    """A valid value other than the field's default, from its type: another choice, the other bool,
    default + 1, the built-in secrets for a list of secret specs."""
    hint = typing.get_type_hints(GoldfishConfig)[f.name]
    if typing.get_origin(hint) is typing.Literal:
        return next(c for c in typing.get_args(hint) if c != f.default)
    if hint is bool:
        return not f.default
    if hint in (int, float):
        return f.default + 1
    if typing.get_origin(hint) is tuple:
        return ("builtin",)
    pytest.fail(f"GoldfishConfig.{f.name}: no generated value for {hint}; teach _other_value its type")


def _flag_values(value) -> list[str]:
    if isinstance(value, tuple):
        return list(value)
    return [json.dumps(value) if isinstance(value, bool) else str(value)]


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def test_every_mask_setting_is_named_once():
    names = [name for _, name in FIELDS]
    assert {"strategy", "k", "h", "goldfish_seed", "protect_k", "protect", "near_duplicates"} <= set(names)
    assert "ignore_index" not in names  # the Python API's, no command-line setting (labels use -100)


@pytest.mark.parametrize("f,name", FIELDS, ids=[name for _, name in FIELDS])
def test_a_mask_setting_reaches_the_flags_the_config_file_the_yaml_and_the_resume_check(f, name, tmp_path):
    value = _other_value(f)
    out = ["--out", str(tmp_path / "out")]
    assert name in train_parser()._actions_by_dest
    flagged = TrainConfig.from_args([*BASE, *out, f"--{name.replace('_', '-')}", *_flag_values(value)])
    assert getattr(flagged.mask, f.name) == value

    (tmp_path / "run.yaml").write_text(yaml.safe_dump({name: _plain(value)}))
    from_file = TrainConfig.from_args([*BASE, *out, "--config", str(tmp_path / "run.yaml")])
    assert from_file.mask == flagged.mask

    resolved = yaml.safe_load(yaml.safe_dump(flagged.settings(), sort_keys=False))  # goldfish_config.yaml
    assert resolved[name] == _plain(value)
    assert TrainConfig.from_dict(resolved).mask == flagged.mask

    default = TrainConfig.from_args([*BASE, *out])
    refuse, warn = run_differences(run_identity(default, []), run_identity(flagged, []))
    line = next(line for line in refuse + warn if line.startswith(f"{name} = "))
    assert (line in warn) == (name in RESUME_WARN_ONLY)


@pytest.mark.slow
def test_goldfish_json_records_every_mask_field(tmp_path):
    out = tmp_path / "out"
    assert main(["train", *BASE, "--out", str(out), "--max-steps", "1", "--batch-size", "2", "--save-steps", "0",
                 "--report-to", "none", "--no-progress", "--k", "5"]) == 0
    record = json.loads((out / "goldfish.json").read_text())
    assert record["goldfish"] == json.loads(json.dumps(GoldfishConfig(k=5).to_dict()))
    assert set(record["goldfish"]) == {f.name for f in dataclasses.fields(GoldfishConfig)}
    assert {name for _, name in FIELDS} <= set(record["settings"])


def _model_folder(path):
    path.mkdir()
    (path / "config.json").write_text("{}")
    (path / "tokenizer.json").write_text("{}")
    return str(path)


def test_audit_and_eval_take_the_models_from_one_group():
    """--model, --name, --baseline, --device, --dtype and --trust-remote-code of goldfish audit and eval are
    ``ModelsArguments``' fields (one help, one default): the two commands' flags and help agree."""
    from goldfish.audit import AuditConfig
    from goldfish.cli import audit_parser, eval_parser
    from goldfish.eval import EvalConfig
    from goldfish.models import ModelsArguments

    shared = [f.name for f in dataclasses.fields(ModelsArguments)]
    assert shared == ["models", "names", "baseline", "device", "dtype", "trust_remote_code"]
    for cls in (AuditConfig, EvalConfig):
        assert issubclass(cls, ModelsArguments)
        assert {f.name: f.metadata for f in dataclasses.fields(cls)[:len(shared)]} == {
            f.name: f.metadata for f in dataclasses.fields(ModelsArguments)}

    def helps(parser):
        return {a.dest: (a.option_strings, a.help, a.default) for a in parser._actions if a.dest in shared}

    assert helps(audit_parser()) == helps(eval_parser()) and len(helps(audit_parser())) == len(shared)


def test_resolve_models_checks_every_folder_and_name_before_anything_loads(tmp_path):
    from goldfish.models import ModelsArguments, resolve_models

    a, b = _model_folder(tmp_path / "a"), _model_folder(tmp_path / "b")
    assert resolve_models(ModelsArguments(models=[a, b])) == ({"a": a, "b": b}, "a")
    assert resolve_models(ModelsArguments(models=[a, b], names=["x", "y"], baseline="y")) == ({"x": a, "y": b}, "y")
    with pytest.raises(ValueError, match="at least one --model"):
        resolve_models(ModelsArguments())
    with pytest.raises(ValueError, match=r"--reference-model .*nowhere: not a readable HF model folder"):
        resolve_models(ModelsArguments(models=[a]), reference_model=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match=r"--model .*nowhere: not a readable"):
        resolve_models(ModelsArguments(models=[a, str(tmp_path / "nowhere")]))
    with pytest.raises(ValueError, match="--baseline z: not one of the models"):
        resolve_models(ModelsArguments(models=[a, b], baseline="z"))
    with pytest.raises(ValueError, match="1 --name given for 2 --model"):
        resolve_models(ModelsArguments(models=[a, b], names=["x"]))
    with pytest.raises(ValueError, match="--name x is given twice"):
        resolve_models(ModelsArguments(models=[a, b], names=["x", "x"]))


@pytest.mark.parametrize("name", ["k", "h", "protect_k"])
def test_the_experiments_take_the_mask_defaults_from_goldfish_config(name):
    from goldfish.experiments.config import ChatConfig, ExperimentConfig

    mask = {f.name: f for f in dataclasses.fields(GoldfishConfig)}[name]
    cls = ChatConfig if name == "protect_k" else ExperimentConfig
    mine = {f.name: f for f in dataclasses.fields(cls)}[name]
    assert mine.default == mask.default and getattr(cls(), name) == mask.default
    assert {k: v for k, v in mine.metadata.items() if k != "help"} == {k: v for k, v in mask.metadata.items() if k != "help"}
