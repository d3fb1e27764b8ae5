"""``goldfish train`` on a user's own chat model and data as they come: a ChatML-template model
folder, TRL formats, parquet/json/csv files, LoRA adapters (and merging), and the prepared-data cache."""

import json

import pytest
import torch
from safetensors.torch import load_file
from chat_styles import chat_model_folder, chat_tokenizer
from helpers import supervised_nll

from goldfish import GoldfishConfig
from goldfish.cli import main
from goldfish.data import build_examples, pack_examples, read_documents
from goldfish.data.prepare import DataSettings, prepare_dataset

CHATS = [{"messages": [{"role": "user", "content": f"Question {i}: where is order {1000 + i}?"},
                       {"role": "assistant", "content": f"Order {1000 + i} ships from depot {i % 7} on Monday."}]}
         for i in range(24)]
TRAIN = ["train", "--batch-size", "4", "--lr", "3e-3", "--no-progress", "--seq-len", "128", "--save-steps", "0"]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def chatml_model(tmp_path_factory):
    return chat_model_folder(tmp_path_factory.mktemp("chatml") / "model")


def test_chatml_model_trains_on_messages_and_prompt_completion(tmp_path, chatml_model):
    msgs = _jsonl(tmp_path / "chats.jsonl", CHATS)
    pc = _jsonl(tmp_path / "pc.jsonl", [{"prompt": c["messages"][0]["content"], "completion": " " + c["messages"][1]["content"]}
                                         for c in CHATS])
    tok = chat_tokenizer("chatml")
    n_reply = sum(len(tok(c["messages"][1]["content"], add_special_tokens=False)["input_ids"]) + 1 for c in CHATS)  # + <|im_end|>
    n_completion = sum(len(tok(" " + c["messages"][1]["content"], add_special_tokens=False)["input_ids"]) + 1 for c in CHATS)  # + EOS
    for data, out, n_supervised in ((msgs, "m", n_reply), (pc, "p", n_completion)):
        args = [*TRAIN, "--model", chatml_model, "--data", data, "--out", str(tmp_path / out), "--max-steps", "3",
                "--data-cache", str(tmp_path / "cache")]
        assert main(args) == 0
        record = json.loads((tmp_path / out / "goldfish.json").read_text())
        t = record["tokens_per_epoch"]
        assert t["supervised_targets"] == n_supervised and record["global_steps"] == 3


@pytest.mark.parametrize("kind", ["messages", "text"])
def test_padding_free_batches_train_like_padded_ones(tmp_path, chatml_model, kind):
    """--padding-free flattens each batch into one row: same batches, masks and loss as padding, so the
    same training up to float rounding, on chats (prompt tokens unsupervised) and plain text (every
    token supervised, the first of each example included) of very different lengths."""
    if kind == "messages":
        rows = [{"messages": [{"role": "user", "content": "Where is my order? " * (1 + i % 5)},
                              {"role": "assistant", "content": f"Order {1000 + i} ships " + "soon, " * (i % 9) + "on Monday."}]}
                for i in range(24)]
    else:
        rows = [{"text": f"Order {1000 + i} ships " + "soon, " * (i % 11) + "on Monday."} for i in range(24)]
    data = _jsonl(tmp_path / "data.jsonl", rows)
    weights, records = [], []
    for out, extra in (("padded", []), ("flat", ["--padding-free"])):
        assert main([*TRAIN, "--model", chatml_model, "--data", data, "--out", str(tmp_path / out), "--max-steps", "4",
                     "--data-cache", str(tmp_path / "cache"), *extra]) == 0
        records.append(json.loads((tmp_path / out / "goldfish.json").read_text()))
        weights.append(load_file(tmp_path / out / "model.safetensors"))
    assert records[0]["tokens_per_epoch"] == records[1]["tokens_per_epoch"]
    assert records[1]["settings"]["padding_free"] and not records[0]["settings"]["padding_free"]
    assert records[0]["train_loss"] == pytest.approx(records[1]["train_loss"], rel=1e-5)
    for name, w in weights[0].items():  # Adam turns rounding in a near-zero gradient into up to ~lr: 1e-4 after 4 steps at 3e-3
        assert torch.allclose(w, weights[1][name], atol=1e-4), name
    assert any(not torch.equal(w, load_file(f"{chatml_model}/model.safetensors")[n]) for n, w in weights[1].items())


def test_lora_adapter_merge_reload_and_audit(tmp_path, chatml_model, capsys):
    data = _jsonl(tmp_path / "chats.jsonl", CHATS)
    out = tmp_path / "lora"
    args = [*TRAIN, "--model", chatml_model, "--data", data, "--out", str(out), "--max-steps", "12", "--logging-steps", "1",
            "--lr", "1e-2", "--lora", "--lora-r", "8", "--lora-alpha", "16", "--lora-targets", "q_proj", "v_proj", "--merge",
            "--data-cache", str(tmp_path / "cache")]
    assert main(args) == 0
    assert (out / "adapter_config.json").is_file() and (out / "merged" / "config.json").is_file()
    assert not (out / "model.safetensors").exists()  # the adapter, not a full copy
    from goldfish.models import load_model

    adapted, tok = load_model(str(out), "cpu", "float32")
    merged, _ = load_model(str(out / "merged"), "cpu", "float32")
    base, _ = load_model(chatml_model, "cpu", "float32")
    ids = torch.tensor([tok(CHATS[0]["messages"][0]["content"])["input_ids"]])
    with torch.no_grad():
        a, m, b = (x(input_ids=ids).logits for x in (adapted, merged, base))
    assert torch.allclose(a, m, atol=1e-5) and not torch.allclose(a, b, atol=1e-3)
    examples = build_examples(CHATS, tok, 128, 4)
    assert supervised_nll(adapted, examples, tok.pad_token_id) < supervised_nll(base, examples, tok.pad_token_id) - 0.2
    assert main(["audit", "--model", str(out), "--data", data, "--out", str(tmp_path / "audit"), "--no-progress",
                 "--max-documents", "4"]) == 0
    assert (tmp_path / "audit" / "summary.json").is_file()


def test_lora_masks_equal_full_finetuning_masks(tmp_path, chatml_model):
    """The goldfish mask lives in the data path: LoRA and full fine-tuning train on the same kept
    targets, step by step (GoldfishTrainer counts them as they are collated)."""
    from transformers import TrainerCallback

    from goldfish.train import TrainConfig, train

    class KeptTargets(TrainerCallback):
        def __init__(self):
            self.seen = []

        def on_step_end(self, args, state, control, **kw):
            self.seen.append(state.supervised_targets_seen)

    data = _jsonl(tmp_path / "c.jsonl", CHATS)
    runs = {}
    for lora in (False, True):
        counter = KeptTargets()
        record = train(TrainConfig.from_dict({
            "data": [data], "output_dir": str(tmp_path / f"lora-{lora}"), "model": chatml_model, "lora": lora, "max_steps": 4,
            "per_device_train_batch_size": 4, "seq_len": 128, "save_steps": 0, "train_sampling_strategy": "sequential",
            "disable_tqdm": True, "data_cache": str(tmp_path / "cache")}), callbacks=[counter])
        runs[lora] = (counter.seen, record["tokens_per_epoch"])
    assert runs[False] == runs[True] and len(runs[True][0]) == 4 and runs[True][0][0] > 0


@pytest.mark.parametrize("kind", ["parquet", "json", "csv", "save_to_disk", "folder"])
def test_file_formats_give_the_same_examples(tmp_path, tokenizer, kind):
    from datasets import Dataset

    from goldfish.embedded.corpus import corpus_part

    rows = [{"text": d["text"][:400], "goldfish_k": 8.0 if i == 2 else None} for i, d in enumerate(corpus_part("targets")[:12])]
    ds = Dataset.from_list(rows)
    src = tmp_path / f"data.{kind}"
    if kind == "parquet":
        ds.to_parquet(str(src))
    elif kind == "json":
        src.write_text(json.dumps(rows))
    elif kind == "csv":
        ds.to_csv(str(src), index=False)
    elif kind == "save_to_disk":
        ds.save_to_disk(str(src))
    else:
        src.mkdir()
        _jsonl(src / "a.jsonl", rows[:5])
        _jsonl(src / "b.jsonl", rows[5:])
    got = prepare_dataset([str(src)], tokenizer, DataSettings(seq_len=64), GoldfishConfig(), cache=tmp_path / "c", progress=False).train
    want = build_examples(rows, tokenizer, 64, 4)
    assert [dict(r) for r in got] == want


def test_prepared_data_equals_the_in_memory_pipeline_and_is_reused(tmp_path, tokenizer, caplog, monkeypatch):
    import logging

    from goldfish.data import prepare
    from goldfish.experiments.chat_data import build_chats

    monkeypatch.setattr(prepare, "SLICE_BYTES", 20_000)  # several slices a source, each mapped by its own workers

    chats = _jsonl(tmp_path / "chats.jsonl", build_chats(60, 0.1, 0.08, seed=0)["train"])
    settings = DataSettings(seq_len=256, pack=True)
    with caplog.at_level(logging.INFO, logger="goldfish"):
        first = prepare_dataset(["embedded:targets", chats], tokenizer, settings, GoldfishConfig(), cache=tmp_path / "c", num_proc=2,
                                progress=False)
        second = prepare_dataset(["embedded:targets", chats], tokenizer, settings, GoldfishConfig(), cache=tmp_path / "c", progress=False)
    assert not first.reused and second.reused and first.path == second.path
    assert f"reusing the cache {first.path}" in caplog.text
    docs = read_documents("embedded:targets") + read_documents(chats)
    want = pack_examples(build_examples(docs, tokenizer, 256, 4), 256, tokenizer.pad_token_id)
    assert [dict(r) for r in second.train] == want
    other = prepare_dataset(["embedded:targets", chats], tokenizer, DataSettings(seq_len=200, pack=True), GoldfishConfig(),
                            cache=tmp_path / "c", progress=False)
    assert not other.reused
    assert len([f for f in first.counts["files"] if f.startswith("packed")]) >= 1
    bad = _jsonl(tmp_path / "bad.jsonl", [{"text": "fine " * 50}] * 300 + [{"text": 7}])
    with pytest.raises(ValueError, match="record 300: 'text' must be a string"):  # the index counts across slices
        prepare_dataset([bad], tokenizer, DataSettings(seq_len=64), GoldfishConfig(), cache=tmp_path / "c", progress=False)


@pytest.mark.parametrize(
    "content,message",
    [
        (b'{"text": "fine"}\n{"text": oops}\n', ":2: not valid JSON"),
        (b'{"text": "caf\xe9"}\n', ":1: not UTF-8 (byte 0xe9"),
        (b'["a", "b"]\n', ":1: a JSON line must be an object"),
    ],
)
def test_unreadable_files_name_file_and_line(tmp_path, capsys, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    assert main(["train", "--init", "micro", "--data", str(path), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and message in err
    assert not (tmp_path / "o").exists()


def test_lora_without_peft_installed_says_how_to_get_it(tmp_path, chatml_model, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "peft", None)  # import peft -> ImportError
    data = _jsonl(tmp_path / "c.jsonl", CHATS)
    assert main([*TRAIN, "--model", chatml_model, "--data", data, "--out", str(tmp_path / "o"), "--lora"]) == 2
    assert "--lora needs the peft package: pip install 'goldfish[peft]'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_run_that_diverges_stops_with_an_error_and_saves_no_final_model(tmp_path, capsys):
    data = _jsonl(tmp_path / "chats.jsonl", CHATS)
    out = tmp_path / "o"
    assert main([*TRAIN, "--init", "micro", "--data", data, "--out", str(out), "--max-steps", "4", "--lr", "1e6",
                 "--logging-steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "training diverged:" in err and "nothing was saved as the final model" in err
    assert not (out / "model.safetensors").exists() and not (out / "goldfish.json").exists()
