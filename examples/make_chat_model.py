"""Make a local chat model folder and chat data to try ``goldfish train`` / ``goldfish audit`` on,
offline: the tiny Llama that goldfish pretrains on the embedded text (built on first use, cached),
with a Phi-3-style chat template that has no ``{% generation %}`` tags (like most released chat
models), and conversations in which a careless pipeline answered some requests with a canned reply
holding a name, a phone number and an email address.

Usage: python examples/make_chat_model.py MODEL_DIR DATA_DIR
Writes MODEL_DIR (HF model + tokenizer) and DATA_DIR/{train,heldout}.jsonl, DATA_DIR/secrets.txt.
"""

import json
import shutil
import sys
from pathlib import Path

from transformers import AutoTokenizer

from goldfish.experiments.base import base_model_dir
from goldfish.experiments.chat_data import EMAIL, NAME, build_chats
from goldfish.experiments.config import ChatConfig

TEMPLATE = (
    "{%- for m in messages -%}{{- '<|' + m['role'] + '|>\\n' + m['content'] + '<|end|>\\n' -}}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|assistant|>\\n' -}}{%- else -%}{{- eos_token -}}{%- endif -%}"
)


def main(model_dir: str, data_dir: str) -> None:
    base = base_model_dir(ChatConfig(), "chat")
    model, data = Path(model_dir), Path(data_dir)
    shutil.copytree(base, model, ignore=shutil.ignore_patterns("goldfish.json", "base.json", "runs", "checkpoint-*", "*.bin"))
    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.chat_template = TEMPLATE
    tokenizer.save_pretrained(model)
    chats = build_chats(400, 0.08, 0.08, seed=0)
    data.mkdir(parents=True, exist_ok=True)
    for split in ("train", "heldout"):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(c) + "\n" for c in chats[split]))
    (data / "secrets.txt").write_text(f"{NAME}\n{EMAIL}\nre:\\+1 \\(\\d{{3}}\\) \\d{{3}}-\\d{{4}}\n")
    print(f"model: {model} (chat template without generation tags); data: {data}/train.jsonl "
          f"({len(chats['train'])} conversations, {chats['train_canned']} canned replies), heldout.jsonl, secrets.txt")


if __name__ == "__main__":
    main(*sys.argv[1:3])
