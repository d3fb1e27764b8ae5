import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/reference.py

# No test reads or leaves anything in the user's caches, nor in another run's: every cache of this
# session (goldfish's prepared data, HF's hub and datasets folders) lives in one folder removed at exit.
_CACHES = tempfile.mkdtemp(prefix="goldfish-tests-")
atexit.register(shutil.rmtree, _CACHES, ignore_errors=True)
os.environ["GOLDFISH_CACHE"] = str(Path(_CACHES) / "goldfish")
os.environ["HF_HOME"] = str(Path(_CACHES) / "huggingface")


@pytest.fixture(scope="session")
def tokenizer():
    from goldfish.embedded.tiny import load_embedded_tokenizer

    return load_embedded_tokenizer()


@pytest.fixture(scope="session")
def target_ids(tokenizer):
    """Token ids of the embedded target documents (real text)."""
    from goldfish.embedded.corpus import corpus_part

    return [tokenizer(d["text"], add_special_tokens=False)["input_ids"] for d in corpus_part("targets")]


@pytest.fixture(scope="session")
def memorized(tmp_path_factory, tokenizer):
    """A tiny Llama trained (here, in seconds) to memorize 4 embedded documents of 64 tokens.

    Returns (model_dir, members_jsonl, non_members_jsonl).
    """
    import json

    import torch
    from helpers import memorize
    from transformers import AutoModelForCausalLM

    from goldfish.embedded.corpus import corpus_part
    from goldfish.embedded.tiny import tiny_llama_config

    docs = corpus_part("targets")
    ids = [tokenizer(d["text"], add_special_tokens=False)["input_ids"][:64] for d in docs[:4]]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_llama_config(tokenizer, "tiny", max_positions=128))
    memorize(model, torch.tensor(ids), lr=3e-3, steps=120, stop_below=0.01)
    root = tmp_path_factory.mktemp("memorized")
    model.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    members = root / "members.jsonl"
    members.write_text("".join(json.dumps({"id": f"m{i}", "text": tokenizer.decode(x)}) + "\n" for i, x in enumerate(ids)))
    non = root / "non_members.jsonl"
    unseen = [tokenizer(d["text"], add_special_tokens=False)["input_ids"][:64] for d in docs[4:16]]
    non.write_text("".join(json.dumps({"id": f"n{i}", "text": tokenizer.decode(x)}) + "\n" for i, x in enumerate(unseen)))
    return root / "model", members, non
