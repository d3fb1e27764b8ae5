"""goldfish.integrations.megatron: the drops Megatron-core's loss mask gets are the drops
``goldfish_mask`` gives the same documents (HF path), whatever the sample cuts, blends and flags."""

import argparse
import math

import numpy as np
import pytest
import torch

pytest.importorskip("megatron.core")
from megatron_data import EodTokenizer, gpt_datasets, tiny_gpt_model, write_indexed  # noqa: E402

from goldfish import GoldfishConfig, apply_goldfish, goldfish_mask  # noqa: E402
from goldfish.integrations.megatron import (  # noqa: E402
    GoldfishDataset,
    MegatronGoldfishConfig,
    add_goldfish_args,
    config_from_args,
)
from goldfish.loss import causal_lm_loss  # noqa: E402
from goldfish.mask import paper_table  # noqa: E402

SEQ = 48  # short samples: most documents are cut, at offsets that change each epoch
PASSAGE = 40  # a passage copied into other documents at other offsets


@pytest.fixture(scope="module")
def corpus(tokenizer):
    """Real text tokenized once (embedded corpus), each document ending with EOD; document 0's
    first PASSAGE tokens also appear inside documents 5, 9 and 14 after different prefixes."""
    from goldfish.embedded.corpus import corpus_part

    eod = tokenizer.eos_token_id
    docs = [tokenizer(d["text"], add_special_tokens=False)["input_ids"][:150] for d in corpus_part("validation")[:24]]
    passage = docs[0][:PASSAGE]
    for n, at in ((5, 3), (9, 17), (14, 31)):
        docs[n] = docs[n][:at] + passage + docs[n][at:]
    return [d + [eod] for d in docs], passage, EodTokenizer(len(tokenizer), eod)


def _stream(ds, docs):
    """The token stream Megatron cuts samples from (documents in its document_index order) and,
    for each stream position, (document number, position in the document)."""
    order = [int(i) for i in ds.document_index]
    stream = np.concatenate([docs[i] for i in order])
    where = [(i, p) for i in order for p in range(len(docs[i]))]
    return stream, where


def _expected(ds, docs, cfg, samples, base_masks):
    """Per sample: Megatron's own loss mask times 'not dropped', the drop of each target read from
    goldfish_mask over its whole document (as the HF path masks a document)."""
    whole = [goldfish_mask(torch.tensor(d), cfg).numpy() for d in docs]
    stream, where = _stream(ds, docs)
    out = []
    for idx, sample, base in zip(range(len(samples)), samples, base_masks):
        start = int(ds.shuffle_index[idx]) * SEQ  # sample i covers stream[i*SEQ : (i+1)*SEQ + 1]
        assert np.array_equal(sample["tokens"].numpy(), stream[start:start + SEQ])  # the mapping is right
        drop = np.array([whole[d][p] for d, p in where[start + 1:start + SEQ + 1]])
        out.append(base * torch.from_numpy(~drop).float())
    return out


@pytest.mark.parametrize("h,eod_mask_loss", [(13, False), (50, True)])
def test_megatron_drops_equal_goldfish_mask_on_each_whole_document(corpus, tmp_path, h, eod_mask_loss):
    docs, _, tok = corpus
    ds = gpt_datasets([write_indexed(tmp_path / "docs", docs)], None, 300, SEQ, tok, eod_mask_loss=eod_mask_loss)
    cfg = MegatronGoldfishConfig(k=4, h=h, seed=7)
    wrapped = GoldfishDataset(ds, cfg, eod_token=tok.eod)
    plain = [ds[i] for i in range(len(ds))]
    got = [wrapped[i] for i in range(len(ds))]
    want = _expected(ds, docs, cfg, plain, [p["loss_mask"] for p in plain])
    assert len(ds) >= 300 and int(ds.document_index.shape[0]) > len(docs)  # several epochs: each document cut at several offsets
    for idx, (g, w, p) in enumerate(zip(got, want, plain)):
        assert torch.equal(g["loss_mask"], w), f"sample {idx}"
        assert g.keys() == p.keys() and all(torch.equal(g[key], p[key]) for key in p if key != "loss_mask")
    dropped = sum(int(((p["loss_mask"] == 1) & (g["loss_mask"] == 0)).sum()) for p, g in zip(plain, got))
    kept_before = sum(int(p["loss_mask"].sum()) for p in plain)
    assert 0.2 < dropped / kept_before < 0.3  # k = 4
    if eod_mask_loss:  # Megatron's own masking stays: the target after each EOD
        assert all(bool((g["loss_mask"][p["tokens"] == tok.eod] == 0).all()) for p, g in zip(plain, got))


def test_a_passage_gets_the_same_drops_wherever_it_lands(corpus, tmp_path):
    docs, passage, tok = corpus
    ds = gpt_datasets([write_indexed(tmp_path / "docs", docs)], None, 300, SEQ, tok)
    cfg = MegatronGoldfishConfig(k=3, h=13)
    wrapped = GoldfishDataset(ds, cfg)  # eod from the dataset's tokenizer
    stream, _ = _stream(ds, docs)
    dropped = {}  # stream position of a target -> dropped?
    for idx in range(len(ds)):
        start = int(ds.shuffle_index[idx]) * SEQ
        mask = wrapped[idx]["loss_mask"]
        dropped.update({start + 1 + t: bool(mask[t] == 0) for t in range(SEQ)})
    n = len(passage)
    hits = [s for s in range(len(stream) - n) if list(stream[s:s + n]) == passage]
    views = {tuple(dropped[s + j] for j in range(cfg.h, n)) for s in hits if all(s + j in dropped for j in range(cfg.h, n))}
    offsets = {s % SEQ for s in hits if all(s + j in dropped for j in range(cfg.h, n))}
    assert len(hits) >= 8 and len(offsets) >= 4  # 4 copies, several epochs, many sample offsets
    assert len(views) == 1 and 0 < sum(next(iter(views))) < n - cfg.h


def test_a_blend_takes_each_datasets_k(corpus, tmp_path):
    docs, _, tok = corpus
    web, code = write_indexed(tmp_path / "web", docs[:12]), write_indexed(tmp_path / "code", docs[12:])
    ds = gpt_datasets([web, code], [0.5, 0.5], 300, SEQ, tok)
    cfg = MegatronGoldfishConfig(k=4, h=13, dataset_k={code: math.inf})
    wrapped = GoldfishDataset(ds, cfg)
    rate = {0: [0, 0], 1: [0, 0]}
    for idx in range(len(ds)):
        plain, got = ds[idx], wrapped[idx]
        assert got["dataset_id"] == plain["dataset_id"]
        r = rate[int(plain["dataset_id"])]
        r[0] += int(((plain["loss_mask"] == 1) & (got["loss_mask"] == 0)).sum())
        r[1] += int(plain["loss_mask"].sum())
    assert rate[1][0] == 0 and rate[1][1] > 1000  # the opted-out dataset: untouched
    assert 0.2 < rate[0][0] / rate[0][1] < 0.3
    # each sample of the blend gets its GPTDataset's drops, cut where that dataset cut it
    inner = ds.datasets[0]
    want = _expected(inner, docs[:12], cfg, [inner[i] for i in range(len(inner))], [inner[i]["loss_mask"] for i in range(len(inner))])
    for idx in range(len(ds)):
        if int(ds.dataset_index[idx]) == 0:
            assert torch.equal(wrapped[idx]["loss_mask"], want[int(ds.dataset_sample_index[idx])])
    with pytest.raises(ValueError, match=r"dataset_k names \['/nowhere'\].*its datasets are"):
        GoldfishDataset(ds, MegatronGoldfishConfig(dataset_k={"/nowhere": 8}))


def _fork_rule(labels: torch.Tensor, k: float, h: int) -> torch.Tensor:
    """The swiss-ai fork's documented rule, written from its description: windows of h labels
    ending at each position, product mod 1,000,003 into the CPU table, drop where < 1/k
    (float32 comparison), the first h-1 positions never dropped."""
    keys = labels.unfold(0, h, 1).prod(dim=-1) % 1_000_003
    drop = torch.zeros(labels.shape, dtype=torch.bool)
    drop[h - 1:] = paper_table()[keys] < 1 / k
    return drop


@pytest.mark.parametrize("k,h", [(50, 50), (4, 13), (2, 3)])
def test_paper_table_matches_the_swiss_ai_forks_masks(corpus, tmp_path, k, h):
    docs, _, tok = corpus
    ds = gpt_datasets([write_indexed(tmp_path / "docs", docs)], None, 200, 128, tok, eod_mask_loss=True)
    wrapped = GoldfishDataset(ds, MegatronGoldfishConfig(strategy="paper-table", k=k, h=h))
    total = 0
    for idx in range(len(ds)):
        plain = ds[idx]
        want = plain["loss_mask"].masked_fill(_fork_rule(plain["labels"], k, h), 0)
        assert torch.equal(wrapped[idx]["loss_mask"], want), f"sample {idx}"
        total += int((want != plain["loss_mask"]).sum())
    assert total > 0


def test_any_dataset_of_megatron_samples_is_masked_from_its_own_tokens(tokenizer):
    """Without an indexed dataset to read from, the context starts at the sample."""
    eod = tokenizer.eos_token_id
    rng = np.random.default_rng(0)
    text = torch.from_numpy(rng.integers(1, 500, (6, 65))).long()
    text[:, 20] = eod
    samples = [{"tokens": t[:-1], "labels": t[1:], "loss_mask": torch.ones(64)} for t in text]
    cfg = GoldfishConfig(k=4, h=5)
    wrapped = GoldfishDataset(samples, cfg, eod_token=eod)
    doc_ids = (torch.arange(65) > 20).long()  # the token after the EOD starts a document
    for idx, t in enumerate(text):
        assert torch.equal(wrapped[idx]["loss_mask"], (~goldfish_mask(t, cfg, doc_ids=doc_ids)[1:]).float())
    bad = [{"tokens": text[0, :-1], "labels": text[0, :-1], "loss_mask": torch.ones(64)}]
    with pytest.raises(ValueError, match="sample 0: .*labels = tokens shifted left by one"):
        GoldfishDataset(bad, cfg, eod_token=eod)[0]
    with pytest.raises(ValueError, match="needs eod_token"):
        GoldfishDataset(samples, cfg)


def test_documents_without_eod_warn(corpus, tmp_path):
    docs, _, tok = corpus
    ds = gpt_datasets([write_indexed(tmp_path / "docs", [d[:-1] for d in docs])], None, 50, SEQ, tok)
    with pytest.warns(UserWarning, match="ends with the EOD token .*--append-eod"):
        GoldfishDataset(ds, GoldfishConfig())


def test_megatron_flags_take_the_forks_names():
    parser = add_goldfish_args(argparse.ArgumentParser(allow_abbrev=False))
    fork = config_from_args(parser.parse_args(["--goldfish-loss", "--goldfish-k", "50", "--goldfish-h", "50"]))
    assert fork == MegatronGoldfishConfig(k=50, h=50)  # goldfish-hash-v1 at the fork's k and h
    assert config_from_args(parser.parse_args([])) is None
    cfg = config_from_args(parser.parse_args(["--goldfish-loss", "--goldfish-strategy", "paper-table", "--goldfish-seed", "3",
                                              "--goldfish-dataset-k", "/data/code=8", "/data/web=inf"]))
    assert cfg == MegatronGoldfishConfig(strategy="paper-table", k=4, h=13, seed=3, dataset_k={"/data/code": 8.0, "/data/web": math.inf})
    defaults = parser.parse_args([])
    assert (defaults.goldfish_k, defaults.goldfish_h, defaults.goldfish_seed, defaults.goldfish_strategy) == (4, 13, 0, "hash")
    for bad in (["--goldfish-dataset-k", "code"], ["--goldfish-strategy", "table"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)
    with pytest.raises(ValueError, match=r"dataset_k\['/c'\] must be a number >= 2"):
        MegatronGoldfishConfig(dataset_k={"/c": 1})


@pytest.fixture
def megatron_parallel(tmp_path):
    """One gloo rank (world size 1) and Megatron's model-parallel state, torn down afterwards."""
    from megatron.core import parallel_state

    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    parallel_state.initialize_model_parallel(1, 1)
    yield
    parallel_state.destroy_model_parallel()
    torch.distributed.destroy_process_group()


def megatron_loss_func(loss_mask, output_tensor):
    """The loss_func pattern of Megatron-LM's pretrain_gpt.py: the per-token losses summed under the
    loss mask, and the token count the schedule divides by."""
    losses, mask = output_tensor.view(-1).float(), loss_mask.view(-1).float()
    return torch.sum(losses * mask), mask.sum()


def _goldfish_loss_of(batch_logits, ds, docs, cfg, plain_masks):
    """goldfish's own loss on the same batch: each sample as an HF row from its document's start
    (logits 0 where the sample has none; those targets are not supervised), the labels Megatron
    supervises masked by apply_goldfish, one mean over the batch's kept targets."""
    stream, where = _stream(ds, docs)
    rows = []
    for b, logits in enumerate(batch_logits):
        start = int(ds.shuffle_index[b]) * SEQ
        pre = where[start][1]  # tokens of the document before the sample
        ids = torch.from_numpy(stream[start - pre:start + SEQ + 1]).long()
        labels = ids.clone()
        labels[:pre + 1] = -100
        labels[pre + 1:][plain_masks[b] == 0] = -100
        pad = torch.zeros(1, logits.shape[-1])
        doc_ids = torch.nn.functional.pad(torch.cumsum(ids == docs[0][-1], 0)[:-1], (1, 0))
        rows.append((torch.cat([pad.expand(pre, -1), logits, pad]), apply_goldfish(labels, ids, cfg, doc_ids=doc_ids)))
    kept = sum(int((lab[1:] != -100).sum()) for _, lab in rows)
    return sum(causal_lm_loss(lg[None], lab[None], num_items_in_batch=kept) for lg, lab in rows), kept


def test_a_megatron_gpt_training_step_uses_goldfishs_loss(corpus, tmp_path, megatron_parallel):
    """A real Megatron-core GPTModel (CPU: its core attention swapped, see megatron_data.SdpaCoreAttention)
    fed by the wrapper through a DataLoader: Megatron's loss (compute_language_model_loss + the
    loss_func pattern) equals goldfish's own loss on the same batch, gradients too, and a step lowers it."""
    docs, _, tok = corpus
    ds = gpt_datasets([write_indexed(tmp_path / "docs", docs)], None, 16, SEQ, tok, eod_mask_loss=True)
    cfg = MegatronGoldfishConfig(k=4, h=13)
    batch = next(iter(torch.utils.data.DataLoader(GoldfishDataset(ds, cfg), batch_size=4)))
    torch.manual_seed(0)
    model = tiny_gpt_model(tok.vocab_size, SEQ)
    params = [p for p in model.parameters() if p.requires_grad]

    def megatron_loss():
        total, count = megatron_loss_func(batch["loss_mask"], model(batch["tokens"], batch["position_ids"], None, labels=batch["labels"]))
        return total / count, count

    loss, count = megatron_loss()
    ours, kept = _goldfish_loss_of(model(batch["tokens"], batch["position_ids"], None), ds, docs, cfg, [ds[b]["loss_mask"] for b in range(4)])
    assert kept == int(count) < int(sum(ds[b]["loss_mask"].sum() for b in range(4)))  # |G|: only kept targets
    torch.testing.assert_close(loss, ours, rtol=1e-5, atol=0)
    for g, w in zip(torch.autograd.grad(loss, params), torch.autograd.grad(ours, params)):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-7)
    opt = torch.optim.SGD(params, lr=1.0)
    loss, _ = megatron_loss()
    loss.backward()
    opt.step()
    assert megatron_loss()[0] < loss
