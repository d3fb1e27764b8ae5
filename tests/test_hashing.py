import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from reference import ref_hash, ref_mix32

from goldfish.hashing import HASH_VERSION, context_hashes, mix32

VECTORS = json.loads((Path(__file__).parent / "data" / "hash_vectors.json").read_text())


def test_vectors_pin_the_spec():
    assert VECTORS["version"] == HASH_VERSION
    for v in VECTORS["vectors"]:
        assert ref_hash(v["seed"], v["context"]) == v["hash"]
        c = len(v["context"])
        ids = torch.tensor([v["context"] + [0]])
        ctx = torch.tensor([[0] * c + [c]])
        assert int(context_hashes(ids, ctx, 13, v["seed"])[0, c]) == v["hash"]
        assert int(context_hashes(ids.numpy(), ctx.numpy(), 13, v["seed"])[0, c]) == v["hash"]


def test_mix32_matches_python_ints():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.integers(0, 2**32, 10_000, dtype=np.int64), [0, 1, 2**31, 2**32 - 1]])
    assert mix32(torch.from_numpy(x)).tolist() == [ref_mix32(int(v)) for v in x]
    assert mix32(x).tolist() == [ref_mix32(int(v)) for v in x]


def test_mix32_is_a_bijection_on_a_sample():
    x = np.arange(0, 2**20, dtype=np.int64) * 4093
    assert len(np.unique(mix32(x))) == len(x)


def test_same_bits_in_a_fresh_process():
    code = (
        "import torch; from goldfish.hashing import context_hashes;"
        "g=torch.Generator().manual_seed(5); ids=torch.randint(0,2**32,(3,200),generator=g);"
        "ctx=torch.randint(0,14,(3,200),generator=g).clamp(max=torch.arange(200));"
        "print(context_hashes(ids,ctx,13,77).sum().item())"
    )
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(0, 2**32, (3, 200), generator=g)
    ctx = torch.randint(0, 14, (3, 200), generator=g).clamp(max=torch.arange(200))
    here = context_hashes(ids, ctx, 13, 77).sum().item()
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert int(there) == here


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    ids = torch.randint(0, 2**32, (4, 512))
    ctx = torch.arange(512).clamp(max=13).expand(4, 512)
    assert torch.equal(context_hashes(ids.cuda(), ctx.cuda(), 13, 3).cpu(), context_hashes(ids, ctx, 13, 3))
