"""Local HF model folders (full models or PEFT adapters): check them before any work starts, and
load them for inference."""

from __future__ import annotations

import json
from pathlib import Path

import torch


def require_peft(flag: str) -> None:
    """Raise ValueError with the install line unless ``peft`` is importable."""
    import warnings

    try:
        import peft  # noqa: F401
    except ImportError:
        raise ValueError(f"{flag} needs the peft package: pip install 'goldfish[peft]' (or pip install peft)") from None
    # peft asks the model a question transformers has deprecated; the answer is right, the warning noise
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def adapter_base(path: str) -> str | None:
    """The base model folder of a PEFT adapter folder (from its adapter_config.json), else None.

    A relative base path is tried as given, then relative to the adapter folder. Raises ValueError
    when the base is not a local folder (nothing is ever downloaded).
    """
    config = Path(path) / "adapter_config.json"
    if not config.is_file():
        return None
    base = json.loads(config.read_text()).get("base_model_name_or_path")
    for candidate in (Path(base), Path(path) / base) if base else ():
        if (candidate / "config.json").is_file():
            return str(candidate)
    raise ValueError(f"{path}: the adapter's base model {base!r} (adapter_config.json: base_model_name_or_path) is not a local "
                     "model folder; edit it to point at the folder that holds the base model")


def _has_tokenizer(folder) -> bool:
    return any((Path(folder) / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json"))


def check_model_folder(path: str, flag: str = "--model") -> None:
    """Raise ValueError unless ``path`` holds a HF model config (or a PEFT adapter whose base does)
    and a tokenizer (in the folder, or for an adapter in its base)."""
    folder = Path(path)
    if (folder / "adapter_config.json").is_file():
        base = adapter_base(path)
        if not _has_tokenizer(folder) and not _has_tokenizer(base):
            raise ValueError(f"{flag} {path}: neither the adapter folder nor its base {base} has a tokenizer")
        return
    if not (folder / "config.json").is_file():
        raise ValueError(f"{flag} {path}: not a readable HF model folder (no config.json or adapter_config.json)")
    if not _has_tokenizer(folder):
        raise ValueError(f"{flag} {path}: the folder has no tokenizer (save one there with tokenizer.save_pretrained)")


def check_attends_within_documents(model, flag: str) -> None:
    """Raise ValueError unless ``model`` restricts attention to each document of a row whose
    ``position_ids`` restart at 0 (no ``attention_mask``), as ``--pack`` and ``--padding-free`` need.

    Probe: two 8-token documents in one row must give the second the same logits as it gets alone
    (HF models build the block-diagonal mask from the resets; a model that does not would silently
    let documents read each other).
    """
    vocab = model.get_input_embeddings().num_embeddings
    ids = torch.randint(0, vocab, (1, 16), generator=torch.Generator().manual_seed(0))
    positions = torch.arange(8).repeat(2).unsqueeze(0)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            device = next(model.parameters()).device
            # no cache, as in training: HF detects the restarts only when there is none
            row = model(input_ids=ids.to(device), position_ids=positions.to(device), use_cache=False).logits[0, 8:].float()
            alone = model(input_ids=ids[:, 8:].to(device), position_ids=positions[:, 8:].to(device), use_cache=False).logits[0].float()
    finally:
        model.train(was_training)
    if not torch.allclose(row, alone, rtol=1e-3, atol=1e-3 * alone.abs().max().item()):
        raise ValueError(f"{flag}: this model does not keep the documents of one row apart (the second of two documents "
                         "whose position_ids restart gets other logits than alone: it reads the first, or ignores the "
                         f"restart); {type(model).__name__} cannot train on such rows, train without {flag}")


def load_model(path: str, device: str | None = None, dtype: str = "auto"):
    """(model, tokenizer) from a local HF folder, in eval mode on ``device`` (default: cuda if present).

    A PEFT adapter folder loads its base model, applies the adapter and merges it (same outputs,
    plain-model speed); the tokenizer comes from the adapter folder if it has one, else the base.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_model_folder(path)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch_dtype = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    base = adapter_base(path)
    model = AutoModelForCausalLM.from_pretrained(base or path, dtype=torch_dtype)
    tokenizer_dir = path
    if base is not None:
        require_peft("an adapter folder")
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, path).merge_and_unload()
        if not _has_tokenizer(path):
            tokenizer_dir = base
    return model.to(device).eval(), AutoTokenizer.from_pretrained(tokenizer_dir)
