import json
import shutil

import pytest
import torch
from helpers import micro_model, seq2seq_collator, sgd_args, text_examples
from safetensors.torch import load_file

from goldfish import GoldfishConfig, goldfish_mask
from goldfish.cli import main
from goldfish.data import build_examples, pack_examples, read_documents
from goldfish.integrations.hf import GoldfishCollator, GoldfishTrainer

BASE = ["train", "--init", "micro", "--batch-size", "4", "--lr", "1e-3", "--no-progress"]
SEQ = ["--seq-len", "64"]


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.slow
def test_train_end_to_end_and_resume_is_identical(tmp_path):
    data = ["--data", "embedded:targets", "--max-steps", "6", "--save-steps", "3", "--logging-steps", "1"]
    assert main([*BASE, *SEQ, *data, "--out", str(tmp_path / "full")]) == 0
    record = json.loads((tmp_path / "full" / "goldfish.json").read_text())
    assert record["hash_version"] == "goldfish-hash-v1" and record["global_steps"] == 6
    t = record["tokens_per_epoch"]
    assert abs(t["drop_rate"] - 0.25) < 0.01 and t["kept_targets"] + t["dropped_targets"] == t["supervised_targets"]
    for f in ("config.json", "model.safetensors", "tokenizer.json", "checkpoint-3", "runs"):
        assert (tmp_path / "full" / f).exists(), f
    # interrupted at step 3: only checkpoint-3 survives; resuming reaches the same weights
    shutil.copytree(tmp_path / "full" / "checkpoint-3", tmp_path / "resumed" / "checkpoint-3")
    assert main([*BASE, *SEQ, *data, "--out", str(tmp_path / "resumed"), "--resume"]) == 0
    a = load_file(tmp_path / "full" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "model.safetensors")
    start = load_file(tmp_path / "full" / "checkpoint-3" / "model.safetensors")
    assert any(not torch.equal(a[n], start[n]) for n in a)
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_pack_keeps_each_documents_mask(tokenizer):
    docs = [{"text": d["text"][:300]} for d in read_documents("embedded:targets")[:10]]
    examples = build_examples(docs, tokenizer, 128, 4)
    rows = pack_examples(examples, 256, tokenizer.pad_token_id)
    assert len(rows) < len(examples) and all(len(r["input_ids"]) == 256 for r in rows)
    flat_ids = [t for r in rows for t in r["input_ids"]]
    flat_drop = torch.cat([goldfish_mask(torch.tensor(r["input_ids"]), GoldfishConfig(), position_ids=torch.tensor(r["position_ids"])) for r in rows])
    pos = 0
    for ex in examples:  # find each example in the packed stream, in order
        while flat_ids[pos : pos + len(ex["input_ids"])] != ex["input_ids"]:
            pos += 1
        assert torch.equal(flat_drop[pos : pos + len(ex["input_ids"])], goldfish_mask(torch.tensor(ex["input_ids"]), GoldfishConfig()))
        pos += len(ex["input_ids"])


def test_per_document_control_in_token_counts(tmp_path, tokenizer):
    from goldfish.data.prepare import DataSettings, prepare_dataset
    from goldfish.embedded.corpus import corpus_part

    texts = [d["text"] for d in corpus_part("targets")[:6]]
    files = [_write_jsonl(tmp_path / "out.jsonl", [{"text": texts[0], "goldfish": False}]),
             _write_jsonl(tmp_path / "k2.jsonl", [{"text": texts[1], "goldfish_k": 2}]),
             _write_jsonl(tmp_path / "rest.jsonl", [{"text": t} for t in texts[2:]])]
    counts = [prepare_dataset([f], tokenizer, DataSettings(seq_len=10_000), GoldfishConfig(), cache=tmp_path / "c", progress=False).counts
              for f in files]
    assert counts[0]["dropped_targets"] == 0
    assert abs(counts[1]["drop_rate"] - 0.5) < 0.06
    assert abs(counts[2]["drop_rate"] - 0.25) < 0.04


def test_goldfish_start_step_trains_standard_before_it(tokenizer, tmp_path):
    def weights(cfg, start):
        model = micro_model(tokenizer)
        GoldfishTrainer(model=model, args=sgd_args(tmp_path, 4), train_dataset=text_examples(tokenizer, n=4),
                        data_collator=GoldfishCollator(seq2seq_collator(tokenizer), cfg, keep_full_labels=start > 0),
                        goldfish_start_step=start).train()
        return [p.detach().clone() for p in model.parameters()]

    late, standard, goldfish = weights(GoldfishConfig(), 1), weights(GoldfishConfig(strategy="none"), 0), weights(GoldfishConfig(), 0)
    assert all(torch.allclose(a, b) for a, b in zip(late, standard))
    assert not all(torch.allclose(a, b) for a, b in zip(late, goldfish))


@pytest.mark.parametrize(
    "rows,extra,message",
    [
        ([{"content": "x"}], [], "'prompt'/'completion' field (have ['content']); use --text-field"),
        ([], [], "holds no documents"),
        ([{"text": "hello there"}], ["--k", "1"], "k must be a finite number >= 2"),
        ([{"text": "hello there"}], ["--seq-len", "8"], "must be longer than the hash context"),
        ([{"text": "hi", "goldfish_k": 1}], [], "goldfish_k must be a number >= 2"),
        ([{"text": "hello there"}], ["--pack", "--padding-free"], "--pack and --padding-free both remove padding"),
    ],
)
def test_bad_input_fails_before_touching_out(tmp_path, capsys, rows, extra, message):
    data = _write_jsonl(tmp_path / "d.jsonl", rows)
    out = tmp_path / "out"
    seq = [] if "--seq-len" in extra else SEQ
    assert main([*BASE, *seq, "--data", data, "--out", str(out), "--max-steps", "1", *extra]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_unreadable_model_dir_and_non_empty_out(tmp_path, capsys):
    data = _write_jsonl(tmp_path / "d.jsonl", [{"text": "hello"}])
    assert main(["train", "--model", str(tmp_path / "nope"), "--data", data, "--out", str(tmp_path / "o")]) == 2
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    assert main(["train", "--model", str(tmp_path / "m"), "--data", data, "--out", str(tmp_path / "o")]) == 2
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("keep me")
    assert main([*BASE, "--data", data, "--out", str(tmp_path / "busy")]) == 2
    err = capsys.readouterr().err
    assert "not a readable HF model folder" in err and "has no tokenizer" in err and "exists and is not empty" in err
    assert not (tmp_path / "o").exists() and (tmp_path / "busy" / "x").read_text() == "keep me"
    assert main([*BASE, "--data", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_no_progress_silences_every_bar(tmp_path):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "goldfish.cli", *BASE, *SEQ, "--data", "embedded:targets", "--max-steps", "1", "--save-steps", "0"]
    quiet = subprocess.run([*cmd, "--out", str(tmp_path / "quiet")], capture_output=True, text=True, check=True)
    loud = subprocess.run([*[c for c in cmd if c != "--no-progress"], "--out", str(tmp_path / "loud")], capture_output=True,
                          text=True, check=True)
    assert "Writing model shards" in loud.stderr and "it/s]" in loud.stderr
    assert "it/s]" not in quiet.stderr and "Writing model shards" not in quiet.stderr


def test_resume_of_a_finished_run_changes_nothing(tmp_path, caplog):
    args = [*BASE, *SEQ, "--data", "embedded:targets", "--max-steps", "2", "--save-steps", "2", "--out", str(tmp_path / "run")]
    assert main(args) == 0
    before = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file() and "runs" not in p.parts}
    assert main([*args, "--resume"]) == 0
    after = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file() and "runs" not in p.parts}
    assert after == before and not (tmp_path / "run" / "checkpoint-3").exists()
    assert "is complete (step 2 of 2); nothing to do" in caplog.text


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["text", "chat"])
def test_eval_during_training_equals_the_audits_heldout_loss(tmp_path, tokenizer, kind):
    """--eval-data: the true loss every --eval-steps, in goldfish.json with the tokens seen; the
    final value is the audit's held-out loss on the same records (1e-4); goldfish plot draws it."""
    from goldfish.embedded.corpus import corpus_part

    texts = [d["text"][:400] for d in corpus_part("validation")[:16]]
    if kind == "text":
        rows = [{"text": t} for t in texts]
    else:
        rows = [{"messages": [{"role": "user", "content": t[:60]}, {"role": "assistant", "content": t[60:300]}]} for t in texts]
    train, held = _write_jsonl(tmp_path / "train.jsonl", rows[:8]), _write_jsonl(tmp_path / "held.jsonl", rows[8:])
    out = tmp_path / "run"
    assert main([*BASE, "--seq-len", "256", "--data", train, "--eval-data", held, "--eval-steps", "2", "--max-steps", "4",
                 "--out", str(out), "--save-steps", "0"]) == 0
    record = json.loads((out / "goldfish.json").read_text())
    points = record["eval"]
    assert [p["step"] for p in points] == [2, 4] and points[0]["input_tokens"] < points[1]["input_tokens"]
    assert 0 < points[0]["supervised_tokens"] < points[1]["supervised_tokens"]
    assert points[-1]["eval_supervised_tokens"] == record["eval_data"]["supervised_targets"]
    assert main(["audit", "--model", str(out), "--data", train, "--non-members", held, "--out", str(tmp_path / "audit"),
                 "--suffix-len", "16", "--no-progress"]) == 0
    heldout = json.loads((tmp_path / "audit" / "summary.json").read_text())["models"]["run"]["utility"]["heldout_loss"]
    assert abs(points[-1]["eval_loss"] - heldout["mean"]) < 1e-4 and heldout["tokens"] == points[-1]["eval_supervised_tokens"]
    assert main(["plot", str(out), "--out", str(tmp_path / "curve.png")]) == 0
    assert (tmp_path / "curve.png").stat().st_size > 5_000


def test_eval_data_that_is_or_holds_training_data_is_warned_of(tmp_path, caplog):
    """The same file, a copy of it, or a folder holding it as --eval-data: a warning naming both; a
    disjoint file: none."""
    from goldfish.data.sources import source_identity
    from goldfish.train import eval_overlap_warnings

    caplog.set_level("WARNING", "goldfish")
    rows = [{"text": f"Record {i} of the training data, long enough to train on for a step or two."} for i in range(8)]
    train = _write_jsonl(tmp_path / "train.jsonl", rows)
    assert main([*BASE, "--seq-len", "64", "--data", train, "--eval-data", train, "--max-steps", "1", "--save-steps", "0",
                 "--report-to", "none", "--out", str(tmp_path / "run")]) == 0
    assert f"--eval-data {train} shares 1 of its 1 files with the training data {train}: its loss measures" in caplog.text
    (tmp_path / "folder").mkdir()
    shutil.copy(train, tmp_path / "folder" / "copy.jsonl")
    other = _write_jsonl(tmp_path / "folder" / "other.jsonl", [{"text": "held out"}])
    [line] = eval_overlap_warnings([source_identity(train)], [source_identity(str(tmp_path / "folder"))])
    assert line.startswith(f"--eval-data {tmp_path / 'folder'} shares 1 of its 2 files with the training data {train}")
    assert eval_overlap_warnings([source_identity(train)], [source_identity(other)]) == []
    assert eval_overlap_warnings([source_identity("embedded:targets")], [source_identity("embedded:validation")]) == []


def test_a_dataset_dicts_validation_split_is_the_default_eval_data(tmp_path, caplog):
    from datasets import Dataset, DatasetDict

    from goldfish.train import eval_sources
    from goldfish.train_config import TrainConfig

    DatasetDict({"train": Dataset.from_list([{"text": "a"}]), "validation": Dataset.from_list([{"text": "b"}]),
                 "test": Dataset.from_list([{"text": "c"}])}).save_to_disk(str(tmp_path / "dd"))
    cfg = lambda *extra: TrainConfig.from_args(["--init", "micro", "--data", str(tmp_path / "dd"), "--out", "o", *extra])  # noqa: E731
    caplog.set_level("INFO", "goldfish")
    assert eval_sources(cfg()) == [f"{tmp_path / 'dd'}:validation"] and "the held-out split of --data" in caplog.text
    assert eval_sources(cfg("--eval-data", "none")) == []
    assert eval_sources(cfg("--data", str(tmp_path / "dd:test"))) == [f"{tmp_path / 'dd'}:validation"]
    assert eval_sources(cfg("--eval-data", str(tmp_path / "dd:test"))) == [str(tmp_path / "dd:test")]


@pytest.mark.slow
def test_a_resumed_runs_record_equals_the_uninterrupted_runs(tmp_path):
    """Killed after checkpoint-3 (only that checkpoint survives) and resumed: goldfish.json holds the
    evaluations from before the kill, the supervised-token counter and the run's mean train loss, as
    the uninterrupted run's does; a resume with another --eval-steps evaluates at the new steps."""
    from goldfish.embedded.corpus import corpus_part

    texts = [d["text"][:300] for d in corpus_part("validation")[:12]]
    train = _write_jsonl(tmp_path / "train.jsonl", [{"text": t} for t in texts[:8]])
    held = _write_jsonl(tmp_path / "held.jsonl", [{"text": t} for t in texts[8:]])
    args = [*BASE, "--seq-len", "128", "--data", train, "--eval-data", held, "--max-steps", "6", "--save-steps", "3",
            "--logging-steps", "1"]
    assert main([*args, "--eval-steps", "2", "--out", str(tmp_path / "full")]) == 0
    shutil.copytree(tmp_path / "full" / "checkpoint-3", tmp_path / "resumed" / "checkpoint-3")
    assert main([*args, "--eval-steps", "2", "--out", str(tmp_path / "resumed"), "--resume"]) == 0
    full, resumed = (json.loads((tmp_path / run / "goldfish.json").read_text()) for run in ("full", "resumed"))
    assert [p["step"] for p in full["eval"]] == [2, 4, 6] and full["supervised_tokens_seen"] > 0
    assert full["eval"] == resumed["eval"]
    assert full["supervised_tokens_seen"] == resumed["supervised_tokens_seen"] == full["eval"][-1]["supervised_tokens"]
    assert resumed["train_loss"] == pytest.approx(full["train_loss"], rel=1e-6)
    shutil.copytree(tmp_path / "full" / "checkpoint-3", tmp_path / "every-step" / "checkpoint-3")
    assert main([*args, "--eval-steps", "1", "--out", str(tmp_path / "every-step"), "--resume"]) == 0
    every = json.loads((tmp_path / "every-step" / "goldfish.json").read_text())
    assert [p["step"] for p in every["eval"]] == [2, 4, 5, 6] and every["settings"]["eval_steps"] == 1
    assert every["eval"][0] == full["eval"][0] and every["eval"][-1] == full["eval"][-1]
