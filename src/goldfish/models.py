"""Local HF model folders: check them before any work starts, and load them for inference."""

from __future__ import annotations

from pathlib import Path

import torch


def check_model_folder(path: str, flag: str = "--model") -> None:
    """Raise ValueError unless ``path`` holds a HF model config and a tokenizer."""
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise ValueError(f"{flag} {path}: not a readable HF model folder (no config.json)")
    if not any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        raise ValueError(f"{flag} {path}: the folder has no tokenizer (save one there with tokenizer.save_pretrained)")


def load_model(path: str, device: str | None = None, dtype: str = "auto"):
    """(model, tokenizer) from a local HF folder, in eval mode on ``device`` (default: cuda if present)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_model_folder(path)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch_dtype = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype).to(device).eval()
    return model, AutoTokenizer.from_pretrained(path)
