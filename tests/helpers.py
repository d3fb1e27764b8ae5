"""Small builders shared by the tests: tiny models, a deterministic Trainer setup, a read-only folder."""

import os
import tempfile
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, TrainingArguments

from goldfish.embedded.tiny import tiny_llama_config


def micro_model(tokenizer, seed: int = 0, tie_word_embeddings: bool = True):
    torch.manual_seed(seed)
    config = tiny_llama_config(tokenizer, "micro")
    config.tie_word_embeddings = tie_word_embeddings
    return AutoModelForCausalLM.from_config(config)


def sgd_args(out, batch_size: int, grad_accum: int = 1, steps: int = 1, **kw) -> TrainingArguments:
    """Plain SGD (an Adam step hides a wrong loss scale), data in order, no logging noise."""
    return TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=batch_size, gradient_accumulation_steps=grad_accum,
        max_steps=steps, learning_rate=0.5, optim="sgd", lr_scheduler_type="constant", report_to=[],
        train_sampling_strategy="sequential", remove_unused_columns=False, save_strategy="no",
        disable_tqdm=True, use_cpu=True, **kw,
    )


def seq2seq_collator(tokenizer):
    return DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100)


def text_examples(tokenizer, n: int = 8, length: int = 48, prompt: int = 0):
    """n examples of real text, the first ``prompt`` labels of each set to -100; lengths vary."""
    from goldfish.embedded.corpus import corpus_part

    out = []
    for i, doc in enumerate(corpus_part("targets")[:n]):
        ids = tokenizer(doc["text"], add_special_tokens=False)["input_ids"][: length - 3 * i]
        out.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return out


def memorize(model, ids: torch.Tensor, lr: float, steps: int, stop_below: float) -> None:
    """Train ``model`` on the batch ``ids`` (AdamW, the standard loss) until its loss is below
    ``stop_below`` or ``steps`` steps have run."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        if loss.item() < stop_below:
            break


def read_only_folder(tmp_path: Path) -> Path:
    """A folder nobody here can write in: a chmod 555 folder for a normal user; as root (who writes
    anywhere) a read-only mount such as /sys, or the test is skipped."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    for folder in (Path("/sys"), Path("/proc/sys")):
        try:
            fd, probe = tempfile.mkstemp(dir=folder)
        except OSError:
            return folder
        os.close(fd)
        os.unlink(probe)
    pytest.skip("root, and no read-only folder to test with")


def sigkill_when_ready(argv: list[str], ready: Path, what: str, timeout: float = 300) -> None:
    """Run ``python argv`` (this checkout's src first on the path) in its own session until it creates
    the file ``ready``, then SIGKILL its whole process group, as an OOM kill or a scheduler would."""
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, *argv], env=env, start_new_session=True, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + timeout
        while not ready.exists() and child.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert ready.exists(), f"the child never reached {what}"
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()


def assert_grads_close(got: dict, want: dict) -> None:
    """Same parameters; every gradient element within rel. 1e-4 of the reference, or within 1e-6 of
    its tensor's largest reference entry (fp32 rounding: tiles and a different operation order move
    an entry by up to ~5e-7 of that), or 1e-9 of the largest gradient of all (a tensor whose true
    gradient is 0, like OPT's key biases, holds rounding noise only, ~1e-12)."""
    assert got.keys() == want.keys() and want
    top = max(g.abs().max().item() for g in want.values())
    for name, g in want.items():
        assert torch.allclose(got[name], g, rtol=1e-4, atol=1e-6 * g.abs().max().item() + 1e-9 * top), name


@torch.no_grad()
def supervised_nll(model, rows: list[dict], pad_token_id: int) -> float:
    """Mean NLL over the supervised targets (labels != -100) of rows with input_ids and labels, right-padded in one batch."""
    from goldfish.loss import causal_lm_loss

    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.tensor([r["input_ids"] + [pad_token_id] * (width - len(r["input_ids"])) for r in rows])
    labels = torch.tensor([r["labels"] + [-100] * (width - len(r["labels"])) for r in rows])
    mask = torch.tensor([[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in rows])
    return causal_lm_loss(model(input_ids=ids, attention_mask=mask).logits, labels).item()


class NotAllowlisted:
    """An object ``torch.load(weights_only=True)`` refuses: a class of the tests that no library
    registers as a safe global (megatron-core registers ``types.SimpleNamespace`` on import)."""

    def __init__(self, **fields):
        self.__dict__.update(fields)
