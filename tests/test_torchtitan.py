"""goldfish.integrations.torchtitan: torchtitan's own text dataset and loss, on the CPU, get the drops
``goldfish_mask`` gives each whole document, across window cuts and a resume."""

import itertools

import numpy as np
import pytest
import torch

pytest.importorskip("torchtitan")
from datasets import Dataset, load_from_disk  # noqa: E402
from torchtitan.components.loss import IGNORE_INDEX, cross_entropy_loss  # noqa: E402
from torchtitan.components.tokenizer import HuggingFaceTokenizer  # noqa: E402
from torchtitan.hf_datasets import DatasetConfig  # noqa: E402
from torchtitan.hf_datasets import text_datasets  # noqa: E402

from goldfish import GoldfishConfig, goldfish_mask  # noqa: E402
from goldfish.integrations.torchtitan import GoldfishTextDataset  # noqa: E402

SEQ = 40


@pytest.fixture
def titan(tokenizer, tmp_path, monkeypatch):
    """A local text dataset registered the way torchtitan documents (its DATASETS table), torchtitan's
    tokenizer over the embedded one, and a factory of fresh HuggingFaceTextDataset iterators."""
    from goldfish.embedded.corpus import corpus_part

    tokenizer.save_pretrained(tmp_path / "tokenizer")
    texts = [d["text"][:600] for d in corpus_part("validation")[:20]]
    Dataset.from_list([{"text": t} for t in texts]).save_to_disk(str(tmp_path / "data"))
    monkeypatch.setitem(text_datasets.DATASETS, "goldfish_test",
                        DatasetConfig(path=str(tmp_path / "data"), loader=load_from_disk, sample_processor=lambda s: s["text"]))
    tt_tokenizer = HuggingFaceTokenizer(str(tmp_path / "tokenizer"))
    docs = [tt_tokenizer.encode(t, add_bos=True, add_eos=True) for t in texts]
    return docs, tt_tokenizer.eos_id, lambda: text_datasets.HuggingFaceTextDataset("goldfish_test", None, tt_tokenizer, seq_len=SEQ)


def _expected_labels(docs, cfg, windows: int):
    """Window n covers stream[n*(SEQ+1) : (n+1)*(SEQ+1)]; each label dropped as goldfish_mask drops
    that token in its whole document."""
    stream = np.concatenate(docs)
    dropped = np.concatenate([goldfish_mask(torch.tensor(d), cfg).numpy() for d in docs])
    out = []
    for n in range(windows):
        s = n * (SEQ + 1)
        out.append(torch.from_numpy(np.where(dropped[s + 1:s + SEQ + 1], IGNORE_INDEX, stream[s + 1:s + SEQ + 1])))
    return out


@pytest.mark.parametrize("h", [13, 50])
def test_torchtitan_labels_get_goldfish_mask_of_each_whole_document(titan, h):
    docs, eos, make = titan
    cfg = GoldfishConfig(k=4, h=h, seed=5)
    got = list(GoldfishTextDataset(make(), cfg, eos_token=eos))
    plain = list(make())
    want = _expected_labels(docs, cfg, len(plain))
    assert len(got) == len(plain) > 20
    for n, ((gi, gl), (pi, pl), w) in enumerate(zip(got, plain, want)):
        assert torch.equal(gi["input"], pi["input"]) and torch.equal(gl, w), f"window {n}"
    dropped = sum(int((gl == IGNORE_INDEX).sum()) for _, gl in got)
    assert 0.2 < dropped / (len(got) * SEQ) < 0.3


def test_a_resumed_torchtitan_run_continues_with_the_same_masks(titan):
    docs, eos, make = titan
    cfg = GoldfishConfig(k=3, h=13)
    whole = [lab for _, lab in GoldfishTextDataset(make(), cfg, eos_token=eos)]
    first = GoldfishTextDataset(make(), cfg, eos_token=eos)
    head = [lab for _, lab in itertools.islice(iter(first), 7)]
    resumed = GoldfishTextDataset(make(), cfg, eos_token=eos)
    resumed.load_state_dict(first.state_dict())
    tail = [lab for _, lab in resumed]
    assert all(torch.equal(a, b) for a, b in zip(head + tail, whole)) and len(head + tail) == len(whole)


def test_torchtitans_loss_averages_over_the_kept_targets_only(titan):
    docs, eos, make = titan
    cfg = GoldfishConfig(k=4, h=13)
    batch = list(itertools.islice(GoldfishTextDataset(make(), cfg, eos_token=eos), 4))
    labels = torch.stack([lab for _, lab in batch])
    torch.manual_seed(0)
    pred = torch.randn(4, SEQ, 8192)
    valid = (labels != IGNORE_INDEX).sum()  # what torchtitan's trainer divides the summed loss by
    kept = ~torch.stack(_expected_labels(docs, cfg, 4)).eq(IGNORE_INDEX)
    nll = -torch.log_softmax(pred, -1).gather(-1, labels.clamp(min=0)[..., None])[..., 0]
    torch.testing.assert_close(cross_entropy_loss(pred, labels) / valid, nll[kept].mean())
    assert int(valid) == int(kept.sum()) < 4 * SEQ


def test_windows_that_are_not_a_shifted_stream_are_refused():
    window = ({"input": torch.arange(8)}, torch.arange(8))
    with pytest.raises(ValueError, match="window 0: .*labels = input shifted left by one"):
        list(GoldfishTextDataset([window], GoldfishConfig(), eos_token=0))
