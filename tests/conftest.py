import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/reference.py


@pytest.fixture(scope="session")
def tokenizer():
    from goldfish.experiments.tiny import load_embedded_tokenizer

    return load_embedded_tokenizer()


@pytest.fixture(scope="session")
def target_ids(tokenizer):
    """Token ids of the embedded target documents (real text)."""
    from goldfish.experiments.corpus import corpus_part

    return [tokenizer(d["text"], add_special_tokens=False)["input_ids"] for d in corpus_part("targets")]
