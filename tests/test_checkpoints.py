"""goldfish.checkpoints, .resume, .saving and .out_folder on real HF Trainer checkpoints (a 2-step
micro run): what counts as complete, which checkpoint --resume picks, the run identity and its
differences, what --overwrite clears, and how a full disk reads. The end-to-end cases (killed saves, a real full disk) are in
test_checkpoint_faults.py."""

import errno
import json
import logging
import os
import shutil
from pathlib import Path

import pytest
import torch
from helpers import NotAllowlisted, micro_model, seq2seq_collator, text_examples
from transformers import Trainer, TrainingArguments

from goldfish.checkpoints import RUN_FILE, checkpoint_problem, choose_checkpoint
from goldfish.out_folder import outputs_to_clear
from goldfish.resume import run_differences, run_identity
from goldfish.saving import RunRecorder
from goldfish.data.sources import source_identity
from goldfish.train_config import TrainConfig

CFG = ["--init", "micro", "--data", "embedded:targets", "--seq-len", "64"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tokenizer):
    """A Trainer run of 2 steps saving checkpoint-1 and checkpoint-2 (with goldfish_run.json)."""
    out = tmp_path_factory.mktemp("run")
    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=2, max_steps=2, save_strategy="steps",
                             save_steps=1, report_to=[], remove_unused_columns=False, disable_tqdm=True, use_cpu=True)
    identity = run_identity(TrainConfig.from_args([*CFG, "--out", str(out)]), [source_identity("embedded:targets")], "key")
    Trainer(model=micro_model(tokenizer), args=args, train_dataset=text_examples(tokenizer, n=4),
            data_collator=seq2seq_collator(tokenizer), callbacks=[RunRecorder(identity)]).train()
    return out


def _copy(run_dir, tmp_path, name="checkpoint-2", as_name=None) -> Path:
    return Path(shutil.copytree(run_dir / name, tmp_path / (as_name or name)))


def test_hf_checkpoints_are_complete_and_hold_the_run(run_dir):
    for name in ("checkpoint-1", "checkpoint-2"):
        assert checkpoint_problem(run_dir / name) is None
        assert json.loads((run_dir / name / RUN_FILE).read_text())["settings"]["k"] == 4


def _cut(name, keep=0.5):
    def damage(folder):
        f = folder / name
        os.truncate(f, int(f.stat().st_size * keep))
    return damage


def _delete(name):
    return lambda folder: (folder / name).unlink()


def _write(name, text):
    return lambda folder: (folder / name).write_text(text)


def _save(name, obj):
    return lambda folder: torch.save(obj, folder / name)


@pytest.mark.parametrize("damage,reason", [
    (_cut("model.safetensors"), "model.safetensors is cut short ("),
    (_cut("model.safetensors", 0.0), "model.safetensors has no readable safetensors header"),
    (_cut("optimizer.pt"), "optimizer.pt is cut short or damaged (not a readable torch.save archive"),
    (_cut("rng_state.pth", 0.9), "rng_state.pth is cut short or damaged"),
    (_delete("model.safetensors"), "no model weights"),
    (_delete("optimizer.pt"), "no optimizer state (saved with --save-only-model?)"),
    (_delete("scheduler.pt"), "scheduler.pt is missing"),
    (_delete("rng_state.pth"), "rng_state.pth missing"),
    (_delete("trainer_state.json"), "trainer_state.json is missing (the save did not finish)"),
    (_write("trainer_state.json", '{"global_step": 2, "log_hist'), "trainer_state.json cannot be read ("),
    (_write("trainer_state.json", '{"global_step": 1}'), "trainer_state.json is at step 1, not 2"),
    # a readable archive that HF's torch.load(weights_only=True) refuses on resuming
    (_save("scheduler.pt", NotAllowlisted(lr=1)), "scheduler.pt cannot be loaded (UnpicklingError: "),
])
def test_an_incomplete_checkpoint_says_why(run_dir, tmp_path, damage, reason):
    folder = _copy(run_dir, tmp_path)
    damage(folder)
    assert reason in checkpoint_problem(folder)


def test_sharded_layouts_and_one_rng_state_a_process(tmp_path):
    """FSDP's folders stand for weights and optimizer; a world of 2 needs rng_state_0 and _1."""
    folder = tmp_path / "checkpoint-7"
    for d in ("pytorch_model_fsdp_0", "optimizer_0"):
        (folder / d).mkdir(parents=True)
    for f in ("scheduler.pt", "rng_state_0.pth"):
        torch.save({}, folder / f)
    (folder / "trainer_state.json").write_text('{"global_step": 7}')
    (folder / RUN_FILE).write_text('{"world_size": 2}')
    assert checkpoint_problem(folder) == "rng_state_1.pth missing"
    torch.save({}, folder / "rng_state_1.pth")
    assert checkpoint_problem(folder) is None


def test_resume_latest_takes_the_newest_complete_checkpoint(run_dir, tmp_path, caplog):
    out = tmp_path / "out"
    _copy(run_dir, out, "checkpoint-1")
    _cut("optimizer.pt")(_copy(run_dir, out, "checkpoint-2"))
    (out / "checkpoint-3").mkdir()  # a save killed at once
    with caplog.at_level(logging.WARNING, logger="goldfish"):
        chosen, skipped = choose_checkpoint(out, "latest")
    assert chosen == out / "checkpoint-1"
    assert [s.split(":")[0] for s in skipped] == ["checkpoint-3", "checkpoint-2"]
    assert "skipping checkpoint-3: no model weights" in caplog.text and "skipping checkpoint-2: optimizer.pt is cut" in caplog.text


def test_resume_fails_clearly_without_a_complete_checkpoint(run_dir, tmp_path):
    with pytest.raises(ValueError, match="no checkpoint-\\* folder in"):
        choose_checkpoint(tmp_path, "latest")
    _delete("scheduler.pt")(_copy(run_dir, tmp_path))
    with pytest.raises(ValueError, match=r"no complete checkpoint in .* \(checkpoint-2: scheduler.pt is missing\)"):
        choose_checkpoint(tmp_path, "latest")
    with pytest.raises(ValueError, match="checkpoint-2: not a complete checkpoint: scheduler.pt is missing"):
        choose_checkpoint(tmp_path, str(tmp_path / "checkpoint-2"))


def _identity(tmp_path, *flags, sources=None):
    cfg = TrainConfig.from_args([*CFG, "--out", str(tmp_path / "out"), *flags])
    return run_identity(cfg, [{"source": "embedded:targets", "corpus": "c0"}] if sources is None else sources)


def test_what_makes_another_run_and_what_only_warns(tmp_path):
    base = _identity(tmp_path)
    assert run_differences(base, _identity(tmp_path)) == ([], [])
    refuse, warn = run_differences(base, _identity(tmp_path, "--k", "8", "--seq-len", "128", "--logging-steps", "3",
                                                   "--save-steps", "7", "--out", str(tmp_path / "elsewhere")))
    assert refuse == ["seq_len = 64 there, 128 here", "k = 4 there, 8 here"]
    assert sorted(warn) == sorted(["logging_steps = 10 there, 3 here", "save_steps = 500 there, 7 here",
                                   f'output_dir = "{tmp_path / "out"}" there, "{tmp_path / "elsewhere"}" here'])
    for flags, line in ((["--batch-size", "2"], "per_device_train_batch_size = 8 there, 2 here"),
                        (["--seed", "1"], "seed = 0 there, 1 here"), (["--lr", "1e-3"], "learning_rate = 0.0005 there, 0.001 here"),
                        (["--pack"], "pack = false there, true here"), (["--init", "tiny"], 'init = "micro" there, "tiny" here')):
        assert run_differences(base, _identity(tmp_path, *flags))[0] == [line]
    other = _identity(tmp_path, sources=[{"source": "embedded:background", "corpus": "c0"}])
    assert run_differences(base, other)[0] == ["the data: embedded:background holds other content (another corpus or kind)"]


def test_a_chat_template_file_is_compared_by_content_not_path(tmp_path):
    template = tmp_path / "chat.jinja"
    template.write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    base = _identity(tmp_path, "--chat-template", str(template))
    moved = tmp_path / "moved.jinja"
    shutil.copy(template, moved)
    refuse, warn = run_differences(base, _identity(tmp_path, "--chat-template", str(moved)))
    assert refuse == [] and warn == [f'chat_template = "{template}" there, "{moved}" here']
    template.write_text("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}{% endfor %}")
    [line] = run_differences(base, _identity(tmp_path, "--chat-template", str(template)))[0]
    assert line.startswith("the chat template's content: ")


def test_file_data_is_compared_by_content_not_path(tmp_path):
    def source(path, files):
        return [{"source": path, "kind": "folder", "files": files}]

    a = [["a.jsonl", 10, "aaa"], ["b.jsonl", 10, "bbb"]]
    base = _identity(tmp_path, sources=source("/x", a))
    assert run_differences(base, _identity(tmp_path, sources=source("/moved", a)))[0] == []
    edited = [["b.jsonl", 10, "BBB"], ["c.jsonl", 3, "ccc"]]
    assert run_differences(base, _identity(tmp_path, sources=source("/x", edited)))[0] == [
        "the data: /x holds other content (changed b.jsonl; added c.jsonl; removed a.jsonl)"]


def test_the_model_is_compared_by_its_files(tmp_path, tokenizer):
    model = tmp_path / "model"
    micro_model(tokenizer).save_pretrained(model)
    tokenizer.save_pretrained(model)

    def identity():
        return run_identity(TrainConfig.from_args(["--model", str(model), "--data", "embedded:targets", "--seq-len", "64",
                                                   "--out", str(tmp_path / "out")]), [])

    base = identity()
    assert run_differences(base, identity()) == ([], [])
    micro_model(tokenizer, seed=1).save_pretrained(model)  # other weights of the same size
    assert [line.split(":")[0] for line in run_differences(base, identity())[0]] == ["the model's fingerprint"]


def _run_folder(root: Path) -> Path:
    root.mkdir()
    for f in ("goldfish.json", "goldfish_config.yaml", "config.json", "model.safetensors", "tokenizer.json",
              "training_args.bin", ".goldfish.json.x1.tmp"):
        (root / f).write_text("x")
    for d in ("checkpoint-5", "runs/Dec01", "merged"):
        (root / d).mkdir(parents=True)
    return root


def test_overwrite_clears_what_a_run_wrote(tmp_path):
    out = _run_folder(tmp_path / "out")
    (out / ".goldfish-owner").write_text("{}")  # atomic_dir's, of the folder the run trains in: kept
    (out / "README.md").write_text("---\nbase_model: x\nlibrary_name: peft\n---\n")  # PEFT's model card
    cleared = outputs_to_clear(out)
    assert sorted(p.name for p in cleared) == sorted(p.name for p in out.iterdir() if p.name != ".goldfish-owner")
    assert outputs_to_clear(tmp_path / "missing") == []


@pytest.mark.parametrize("extra,message", [
    ("notes.txt", "holds notes.txt, which goldfish train does not write"),
    ("README.md", "holds README.md, which goldfish train does not write"),
    ("data/", "holds data, which goldfish train does not write"),
])
def test_overwrite_refuses_files_it_did_not_write(tmp_path, extra, message):
    out = _run_folder(tmp_path / "out")
    (out / extra.rstrip("/")).mkdir() if extra.endswith("/") else (out / extra).write_text("mine")
    with pytest.raises(ValueError, match=message):
        outputs_to_clear(out)


def test_overwrite_refuses_a_model_folder_that_holds_no_run(tmp_path):
    out = tmp_path / "base-model"
    out.mkdir()
    for f in ("config.json", "model.safetensors", "tokenizer.json"):
        (out / f).write_text("x")
    with pytest.raises(ValueError, match="holds no goldfish train run"):
        outputs_to_clear(out)


@pytest.mark.parametrize("error", [
    RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 2102400 vs 2102288"),
    OSError(errno.ENOSPC, "No space left on device"),
    Exception("Error while serializing: I/O error: No space left on device (os error 28)"),  # safetensors' SafetensorError
])
def test_a_full_disk_reads_as_such(tmp_path, error):
    recorder = RunRecorder({})
    recorder.saving = "checkpoint-10"
    message = rf"^no space left on device while saving checkpoint-10 in {tmp_path} \(\d+\.\d MiB free of "
    with pytest.raises(ValueError, match=message), recorder.full_disk_reported(tmp_path):
        raise error


def test_other_write_errors_are_left_alone(tmp_path):
    with pytest.raises(PermissionError), RunRecorder({}).full_disk_reported(tmp_path):
        raise PermissionError(errno.EACCES, "Permission denied")


def test_a_due_save_first_marks_its_folder_incomplete_and_records_the_run(run_dir, tmp_path):
    """An older save's checkpoint-2 (as when a resume from checkpoint-1 reaches step 2 again) reads
    incomplete from the moment the new save is due, so a kill during it cannot leave old and new files
    that pass as one checkpoint; on_save writes the record too (save strategies that decide late)."""
    from types import SimpleNamespace

    folder = _copy(run_dir, tmp_path)
    (folder / RUN_FILE).unlink()
    args, state = SimpleNamespace(output_dir=str(tmp_path)), SimpleNamespace(global_step=2, is_world_process_zero=True)
    recorder = RunRecorder({"run": "new"})
    recorder.on_step_end(args, state, SimpleNamespace(should_save=False))
    assert (folder / "trainer_state.json").exists() and not (folder / RUN_FILE).exists() and recorder.saving is None
    recorder.on_step_end(args, state, SimpleNamespace(should_save=True))
    assert checkpoint_problem(folder) == "trainer_state.json is missing (the save did not finish)"
    assert json.loads((folder / RUN_FILE).read_text()) == {"run": "new"} and recorder.saving == "checkpoint-2"
    (folder / RUN_FILE).unlink()
    recorder.on_save(args, state, SimpleNamespace(should_save=False))
    assert json.loads((folder / RUN_FILE).read_text()) == {"run": "new"} and recorder.saving is None


def test_overwrite_with_bad_data_leaves_the_old_run(tmp_path, capsys):
    from goldfish.cli import main

    out = _run_folder(tmp_path / "out")
    before = sorted(p.name for p in out.rglob("*"))
    data = tmp_path / "bad.jsonl"
    data.write_text('{"content": "no text field"}\n')
    assert main(["train", "--init", "micro", "--data", str(data), "--out", str(out), "--overwrite", "--max-steps", "1"]) == 2
    assert "records have no 'text'" in capsys.readouterr().err
    assert sorted(p.name for p in out.rglob("*")) == before


@pytest.mark.parametrize("flags,message", [
    (["--resume", "--overwrite"], "give one of --resume (continue the run in --out) or --overwrite (start it again)"),
    (["--force"], "--force overrides --resume's check that the checkpoint is the same run: add --resume"),
])
def test_run_flags_that_contradict_each_other(tmp_path, capsys, flags, message):
    from goldfish.cli import main

    assert main(["train", *CFG, "--out", str(tmp_path / "out"), *flags]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"goldfish train: error: {message}"


def test_resume_point_logs_what_only_warns_and_needs_force_without_a_record(run_dir, tmp_path, caplog):
    from goldfish.resume import resume_point

    out = tmp_path / "out"
    _copy(run_dir, out)
    with caplog.at_level(logging.WARNING, logger="goldfish"):
        point = resume_point(TrainConfig.from_args([*CFG, "--out", str(out), "--resume", "--logging-steps", "3"]))
    assert point.checkpoint == out / "checkpoint-2" and not point.record["forced"]
    assert point.record["warnings"] == [f'output_dir = "{run_dir}" there, "{out}" here', "logging_steps = 10 there, 3 here"]
    assert "--resume: checkpoint-2 differs: logging_steps = 10 there, 3 here" in caplog.text
    (out / "checkpoint-2" / RUN_FILE).unlink()
    with pytest.raises(ValueError, match=f"checkpoint-2 is another run: no readable {RUN_FILE} .*; pass --force"):
        resume_point(TrainConfig.from_args([*CFG, "--out", str(out), "--resume"]))
    forced = resume_point(TrainConfig.from_args([*CFG, "--out", str(out), "--resume", "--force"]))
    assert forced.record["forced"] and forced.record["differences"][0].startswith(f"no readable {RUN_FILE}")


def test_the_hub_token_is_in_no_file_of_out_or_its_checkpoints(tmp_path):
    from goldfish.cli import main

    token = "hf_NotARealTokenButOneToFind1234"
    out = tmp_path / "run"
    assert main(["train", "--init", "micro", "--batch-size", "4", "--no-progress", "--seq-len", "64", "--data",
                 "embedded:targets", "--max-steps", "2", "--save-steps", "1", "--out", str(out), "--hub-token", token]) == 0
    saved = sorted(out.rglob("training_args.bin"))
    assert [p.parent.name for p in saved] == ["checkpoint-1", "checkpoint-2", "run"]
    for p in saved:
        args = torch.load(p, weights_only=False)
        assert args.hub_token is None and args.max_steps == 2, p
    assert not [p for p in out.rglob("*") if p.is_file() and token.encode() in p.read_bytes()]
