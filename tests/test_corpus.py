import pytest

from goldfish.embedded.corpus import PARTS, corpus_fingerprint, corpus_part
from goldfish.embedded.tiny import CHAT_TOKENS, embedded_tokenizer_dir


def test_parts_are_real_disjoint_and_stable():
    parts = {p: corpus_part(p) for p in PARTS}
    assert len(parts["targets"]) >= 50 and len(parts["background"]) >= 1000 and len(parts["validation"]) >= 50
    ids = [d["id"] for p in PARTS for d in parts[p]]
    assert len(ids) == len(set(ids))
    assert sum(len(d["text"]) for d in parts["background"]) > 500_000
    assert all(len(d["text"]) >= 200 for p in PARTS for d in parts[p])
    assert corpus_fingerprint() == corpus_fingerprint()


def test_unknown_part():
    with pytest.raises(ValueError, match="unknown embedded corpus part 'train'.*targets"):
        corpus_part("train")


def test_tokenizer_is_a_hf_folder_that_round_trips(tokenizer):
    from transformers import AutoTokenizer

    again = AutoTokenizer.from_pretrained(embedded_tokenizer_dir())
    text = corpus_part("validation")[0]["text"]
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert again(text, add_special_tokens=False)["input_ids"] == ids
    assert tokenizer.decode(ids) == text
    assert len(ids) < len(text) / 2.5  # a real BPE, not characters
    assert tokenizer.eos_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id
    assert all(tokenizer.convert_tokens_to_ids(t) != tokenizer.unk_token_id for t in CHAT_TOKENS)
