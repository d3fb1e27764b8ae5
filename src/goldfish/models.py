"""Local HF model folders (full models or PEFT adapters): check them before any work starts, and
load them for inference; check that a model can train on rows of several documents."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

DTYPES = ("auto", "float32", "bfloat16", "float16")  # "auto": the checkpoint's own dtype


def torch_dtype(name: str):
    """The ``from_pretrained`` dtype for a name of ``DTYPES``."""
    return "auto" if name == "auto" else getattr(torch, name)


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
    """Raise ValueError unless ``model`` treats each document of a row whose ``position_ids``
    restart at 0 (no ``attention_mask``) as its own sequence, as ``--pack`` and ``--padding-free`` need.

    Probe, in the model's own dtype and without a KV cache (as in training; HF detects the restarts
    only without one): the logits of an 8-token document b must not depend on the document before
    it in the row (``[a, b]`` vs ``[a', b]``: bitwise equal when attention stays within documents),
    and must be those of b alone at positions 0-7 (up to the dtype's rounding: 32 eps of the
    largest logit; catches absolute position embeddings that ignore the restart).
    """
    vocab = model.get_input_embeddings().num_embeddings
    gen = torch.Generator().manual_seed(0)
    a, other, b = (torch.randint(0, vocab, (1, 8), generator=gen) for _ in range(3))
    pos = torch.arange(8).unsqueeze(0)
    device = next(model.parameters()).device

    def logits_of_last_8(ids, positions):
        out = model(input_ids=ids.to(device), position_ids=positions.to(device), use_cache=False)
        return out.logits[0, -8:].float()

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            in_row = logits_of_last_8(torch.cat([a, b], 1), torch.cat([pos, pos], 1))
            after_other = logits_of_last_8(torch.cat([other, b], 1), torch.cat([pos, pos], 1))
            alone = logits_of_last_8(b, pos)
    finally:
        model.train(was_training)
    scale = alone.abs().max().item()
    dtype = next(model.parameters()).dtype
    rounding = 32 * (torch.finfo(dtype).eps if dtype.is_floating_point else torch.finfo(torch.float32).eps) * scale
    if not torch.allclose(in_row, after_other, rtol=0, atol=1e-5 * scale):
        problem = "its documents read each other (the attention mask ignores the position_ids restarts)"
    elif not torch.allclose(in_row, alone, rtol=0, atol=rounding):
        problem = "a document's positions do not restart with its position_ids"
    else:
        return
    raise ValueError(f"{flag}: {type(model).__name__} cannot train on rows of several documents: {problem}; "
                     f"train without {flag}")


def display_names(paths: list[str], names: list[str] | None = None) -> list[str]:
    """A name per model folder for tables: ``names`` if given (one per path), else each folder's name
    (``name#i`` where two folders share one)."""
    if names:
        if len(names) != len(paths):
            raise ValueError(f"{len(names)} --name given for {len(paths)} --model")
        return list(names)
    base = [Path(m).name or str(m) for m in paths]
    return [n if base.count(n) == 1 else f"{n}#{i}" for i, n in enumerate(base)]


def trust_remote_code_field():
    """The ``--trust-remote-code`` setting of every command that loads models (one definition)."""
    return field(default=False, metadata={
        "help": "run the Python code a model folder ships (auto_map in its config.json or tokenizer_config.json); without "
                "it such a folder is refused, never asked about (read the code first)"})


MODELS_ALIASES = {"--model": "--models", "--name": "--names"}  # the singular spellings of the repeatable flags


@dataclass
class ModelsArguments:
    """The models a command compares (``goldfish audit``, ``goldfish eval`` extend it): local folders,
    their display names, the baseline, and how they load. ``resolve_models`` checks them."""

    models: list[str] = field(default_factory=list, metadata={
        "repeatable": True, "help": "local HF model folder or PEFT adapter folder; repeat to compare models in one table"})
    names: list[str] | None = field(default=None, metadata={
        "repeatable": True, "help": "display name of each --model, in order"})
    baseline: str | None = field(default=None, metadata={
        "help": "the model (display name) the others' utility is compared with (None: the first --model)"})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, cuda:1 ... (None: cuda if available)"})
    dtype: Literal[DTYPES] = field(default="auto", metadata={"help": "dtype the models are loaded in (auto: the checkpoint's)"})
    trust_remote_code: bool = trust_remote_code_field()


def resolve_models(args: ModelsArguments, **others: str | None) -> tuple[dict[str, str], str]:
    """({display name: folder} of ``args.models`` in order, the baseline's name), each folder checked
    (``check_model_folder``) before any loads, as are ``others`` (flag name without dashes, e.g.
    ``reference_model=PATH``; None: not given). ValueError: no --model, a bad folder, a --name count
    that does not match, or a --baseline that names none of the models."""
    if not args.models:
        raise ValueError("give at least one --model DIR")
    for m in args.models:
        check_model_folder(m)
    for name, path in others.items():
        if path is not None:
            check_model_folder(path, "--" + name.replace("_", "-"))
    names = display_names(args.models, args.names)
    if len(set(names)) < len(names):
        raise ValueError(f"--name {next(n for n in names if names.count(n) > 1)} is given twice: give each --model its own name")
    baseline = args.baseline or names[0]
    if baseline not in names:
        raise ValueError(f"--baseline {baseline}: not one of the models ({', '.join(names)})")
    return dict(zip(names, args.models)), baseline


def from_pretrained(auto_class, path: str, flag: str = "--model", trust_remote_code: bool = False, **kwargs):
    """``auto_class.from_pretrained(path, **kwargs)`` (an ``Auto*`` class of transformers, a local folder),
    the one place goldfish loads models, tokenizers and configs. The folder's own code (``auto_map``) runs
    only with ``trust_remote_code``; without it, a folder that needs it raises ValueError naming ``flag``
    and ``--trust-remote-code`` (transformers would otherwise ask on stdin mid-run)."""
    try:
        return auto_class.from_pretrained(path, trust_remote_code=trust_remote_code, **kwargs)
    except ValueError as e:
        if trust_remote_code or "custom code" not in str(e):
            raise
        raise ValueError(f"{flag} {path}: the folder holds its own model code (auto_map); goldfish runs it only with "
                         "--trust-remote-code (read that code first)") from None


def load_model(path: str, device: str | None = None, dtype: str = "auto", trust_remote_code: bool = False,
               flag: str = "--model"):
    """(model, tokenizer) from a local HF folder, in eval mode on ``device`` (default: cuda if present).

    A PEFT adapter folder loads its base model, applies the adapter and merges it (same outputs,
    plain-model speed); the tokenizer comes from the adapter folder if it has one, else the base.
    The folders' own code runs only with ``trust_remote_code`` (``from_pretrained``). The folder is
    one ``check_model_folder`` (or ``resolve_models``) accepted: it is not checked again here.
    """
    from transformers import AutoModelForCausalLM

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    base = adapter_base(path)
    model = from_pretrained(AutoModelForCausalLM, base or path, flag, trust_remote_code, dtype=torch_dtype(dtype))
    if base is not None:
        require_peft("an adapter folder")
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, path).merge_and_unload()
    return model.to(device).eval(), load_tokenizer(path, trust_remote_code, flag)


def load_tokenizer(path: str, trust_remote_code: bool = False, flag: str = "--model"):
    """The tokenizer of a local HF folder: an adapter folder's own if it has one, else its base's."""
    from transformers import AutoTokenizer

    base = adapter_base(path)
    folder = base if base is not None and not _has_tokenizer(path) else path
    return from_pretrained(AutoTokenizer, folder, flag, trust_remote_code)
