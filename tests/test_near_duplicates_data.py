"""goldfish-align-v1 through the data path: the prepared ``goldfish_aligned`` column (padded and
packed) equals the in-memory rule, its counts follow it, the collator applies it, and ``goldfish
train --near-duplicates align`` records the rule and its clusters."""

import json

import numpy as np
import pytest
import torch

from goldfish import GoldfishConfig
from goldfish.cli import main
from goldfish.data import build_examples, read_documents
from goldfish.data.near_duplicates import aligned_examples
from goldfish.data.prepare import DataSettings, prepare_dataset
from goldfish.integrations.hf import GoldfishCollator
from goldfish.mask import goldfish_mask

CFG = GoldfishConfig()
ALIGN = GoldfishConfig(near_duplicates="align")  # the rule prepare_dataset applies with --near-duplicates align


@pytest.fixture
def chats(tmp_path):
    from goldfish.experiments.chat_data import build_chats

    path = tmp_path / "chats.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in build_chats(80, 0.2, 0.08, seed=0)["train"]))
    return path


def test_prepared_column_equals_the_rule_in_memory(tmp_path, tokenizer, chats):
    examples = build_examples(read_documents(str(chats)), tokenizer, 256, 4)
    want = aligned_examples([e["input_ids"] for e in examples], [e["labels"] for e in examples], CFG.h, CFG.seed)
    assert want.clusters >= 2 and want.aligned_targets > 100
    columns = [want.column(n, len(e["input_ids"])).tolist() for n, e in enumerate(examples)]
    got = prepare_dataset([str(chats)], tokenizer, DataSettings(seq_len=256), ALIGN, cache=tmp_path / "c",
                          progress=False)
    assert got.train["goldfish_aligned"] == columns
    assert got.counts["near_duplicates"] == {"rule": "goldfish-align-v1", **want.stats()}
    drops = [goldfish_mask(np.asarray(e["input_ids"]), CFG, aligned=np.asarray(c)) for e, c in zip(examples, columns)]
    sup = [(np.asarray(e["labels"]) != -100) & (np.arange(len(c)) > 0) for e, c in zip(examples, columns)]
    assert got.counts["dropped_targets"] == sum(int((d & s).sum()) for d, s in zip(drops, sup))
    packed = prepare_dataset([str(chats)], tokenizer, DataSettings(seq_len=256, pack=True), ALIGN,
                             cache=tmp_path / "c", progress=False)
    flat = [v for row in packed.train["goldfish_aligned"] for v in row]
    assert [v for v in flat if v >= 0] == [v for c in columns for v in c if v >= 0]
    assert packed.counts["dropped_targets"] == got.counts["dropped_targets"]


def test_trl_route_applies_the_rule(tokenizer, chats):
    """with_aligned_column + goldfish_labels_map (the TRL route) mask as goldfish train's prepared data does."""
    from datasets import Dataset

    from goldfish.integrations.hf import goldfish_labels_map, with_aligned_column

    examples = build_examples(read_documents(str(chats)), tokenizer, 256, 4)
    want = aligned_examples([e["input_ids"] for e in examples], [e["labels"] for e in examples], CFG.h, CFG.seed)
    ds = with_aligned_column(Dataset.from_list([{"input_ids": e["input_ids"], "labels": e["labels"]} for e in examples]), CFG)
    assert ds["goldfish_aligned"] == [want.column(n, len(e["input_ids"])).tolist() for n, e in enumerate(examples)]
    labels = list(ds.map(goldfish_labels_map(CFG), batched=True, batch_size=7)["labels"])
    for e, column, got in zip(examples, ds["goldfish_aligned"], labels):
        drop = goldfish_mask(np.asarray(e["input_ids"]), CFG, aligned=np.asarray(column))
        assert got == np.where(drop, -100, e["labels"]).tolist()
    assert labels != list(ds.remove_columns("goldfish_aligned").map(goldfish_labels_map(CFG), batched=True)["labels"])  # the column counts


def test_collator_applies_the_column(tokenizer):
    from transformers import DataCollatorForSeq2Seq

    docs = [{"messages": [{"role": "user", "content": f"Order {i}?"},
                          {"role": "assistant", "content": f"Hi Sam{'my' * i}, your refund for order #{4000 + 17 * i} has been "
                                                           "approved and the money is on its way to your card."}]}
            for i in range(4)]
    examples = build_examples(docs, tokenizer, 128, 4)
    aligned = aligned_examples([e["input_ids"] for e in examples], [e["labels"] for e in examples], CFG.h, CFG.seed)
    assert aligned.aligned_targets > 0
    features = [e | {"goldfish_aligned": aligned.column(n, len(e["input_ids"])).tolist()} for n, e in enumerate(examples)]
    for side in ("right", "left"):
        tokenizer.padding_side = side
        try:
            batch = GoldfishCollator(DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100), CFG)(features)
        finally:
            tokenizer.padding_side = "right"
        for i, f in enumerate(features):
            n, ids = len(f["input_ids"]), np.asarray(f["input_ids"])
            want = np.where(goldfish_mask(ids, CFG, aligned=np.asarray(f["goldfish_aligned"])), -100, f["labels"])
            row = batch["labels"][i, :n] if side == "right" else batch["labels"][i, batch["labels"].shape[1] - n :]
            assert row.tolist() == want.tolist()
    assert isinstance(batch["labels"], torch.Tensor)


def test_train_records_logs_and_reports_the_rule(tmp_path, capsys, caplog, chats):
    caplog.set_level("INFO", "goldfish")
    out = tmp_path / "o"
    assert main(["train", "--init", "micro", "--data", str(chats), "--out", str(out), "--max-steps", "2", "--batch-size", "4",
                 "--no-progress", "--save-steps", "0", "--near-duplicates", "align", "--seq-len", "256"]) == 0
    rec = json.loads((out / "goldfish.json").read_text())
    nd = rec["near_duplicates"]
    assert nd["rule"] == "goldfish-align-v1" and nd["clusters"] >= 2 and nd["passages_clustered"] > nd["clusters"]
    assert nd["aligned_targets"] > 0 and rec["settings"]["near_duplicates"] == "align"
    said = (f"{nd['clusters']} clusters of {nd['passages_clustered']} passages, {nd['aligned_targets']} aligned targets")
    assert f"near-duplicates (goldfish-align-v1): {said}" in caplog.text
    assert f"near-duplicates: {said}" in capsys.readouterr().out.splitlines()[-1]


def test_align_needs_the_hash_strategy(tmp_path, capsys, chats):
    assert main(["train", "--init", "micro", "--data", str(chats), "--out", str(tmp_path / "o"), "--strategy", "static",
                 "--near-duplicates", "align", "--no-progress"]) == 2
    assert "--strategy hash" in capsys.readouterr().err
