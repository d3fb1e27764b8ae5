"""Where ``goldfish audit`` decodes and scores: in-process HF (``hf``, the default), an
OpenAI-compatible server (``openai``), or a ``vllm serve`` goldfish starts and stops (``vllm``).

Every engine offers the same four operations on token ids, with the semantics of the in-process
functions they stand for (``goldfish.audit.extraction`` and ``goldfish.audit.sampling``):

    context                                  tokens the model reads, prompt and continuation together
    generate_suffixes(prefixes, lengths, beams, stop_at_eos, desc)       greedy / beam continuations
    sample_suffixes(prefixes, keys, lengths, samples, rule, seed, stop_at_eos, desc)
    exact_logprobs(prefixes, suffixes, rule, desc)       log p_exact of each suffix under ``rule``
    token_logprobs(sequences, desc)          (log p(x_i | x_<i), mean, std of log p(. | x_<i))
    describe()                               what ran where, for ``summary.json`` (``engine``)
"""

from __future__ import annotations

ENGINES = ("hf", "openai", "vllm")


def check_engine(cfg) -> None:
    """ValueError unless the engine settings of an ``AuditConfig`` fit together (before any model loads)."""
    from goldfish.distributed import world_size
    from goldfish.models import adapter_base

    given = {"--endpoint": cfg.endpoint, "--served-model": cfg.served_model, "--api-key-env": cfg.api_key_env}
    if cfg.engine != "openai" and any(v is not None for v in given.values()):
        flags = ", ".join(k for k, v in given.items() if v is not None)
        raise ValueError(f"{flags}: settings of --engine openai (this audit runs --engine {cfg.engine})")
    if cfg.engine != "vllm" and cfg.vllm_python is not None:
        raise ValueError(f"--vllm-python: a setting of --engine vllm (this audit runs --engine {cfg.engine})")
    if cfg.engine == "hf":
        return
    if cfg.beams != 1:
        raise ValueError(f"--beam {cfg.beams}: beam search runs in-process only (--engine hf); the servers' beam searches "
                         "are not HF's")
    if world_size() > 1:
        raise ValueError(f"--engine {cfg.engine}: run it as one process (the server batches); torchrun / accelerate launch "
                         "shard --engine hf only")
    if cfg.engine == "openai":
        from goldfish.audit.engines.openai import api_key

        if cfg.endpoint is None:
            raise ValueError("--engine openai needs --endpoint URL, the base URL of the server (e.g. http://127.0.0.1:8000)")
        if len(cfg.models) != 1:
            raise ValueError(f"--engine openai audits the one model the server serves: give one --model (its local folder, "
                             f"for the tokenizer), not {len(cfg.models)}")
        api_key(cfg.api_key_env)
    if cfg.engine == "vllm":
        from goldfish.audit.engines.vllm import check_vllm_python

        if cfg.vllm_python is None:
            raise ValueError("--engine vllm needs --vllm-python PATH, the python of a virtualenv with vLLM (`make engine-venv`)")
        adapters = [m for m in cfg.models if adapter_base(m) is not None]
        if adapters:
            raise ValueError(f"--engine vllm serves full model folders; {adapters[0]} is a PEFT adapter: merge it first "
                             "(peft's merge_and_unload, then save_pretrained) or use --engine hf")
        check_vllm_python(cfg.vllm_python)


def open_engine(cfg, path: str, servers):
    """(engine, tokenizer) of the model folder ``path`` under ``cfg.engine``; a server goldfish starts
    is entered into the ExitStack ``servers`` (closing it stops the server)."""
    from goldfish.audit.engines.hf import HFEngine
    from goldfish.models import load_model, load_tokenizer

    def local():
        model, tokenizer = load_model(path, cfg.device, cfg.dtype, cfg.trust_remote_code)
        return HFEngine(model, tokenizer, cfg.batch_size, cfg.progress)

    if cfg.engine == "hf":
        engine = local()
        return engine, engine.tokenizer
    from transformers import AutoConfig

    from goldfish.audit.engines.openai import OpenAIEngine, api_key
    from goldfish.audit.extraction import max_context
    from goldfish.models import adapter_base, from_pretrained

    tokenizer = load_tokenizer(path, cfg.trust_remote_code)
    context = max_context(from_pretrained(AutoConfig, adapter_base(path) or path, "--model", cfg.trust_remote_code))
    if cfg.engine == "vllm":
        from goldfish.audit.engines.vllm import vllm_server

        endpoint = servers.enter_context(vllm_server(cfg.vllm_python, path, cfg.dtype))
        return OpenAIEngine(endpoint, tokenizer, context, local, "goldfish", None, cfg.batch_size, cfg.progress,
                            kind="vllm"), tokenizer
    return OpenAIEngine(cfg.endpoint, tokenizer, context, local, cfg.served_model, api_key(cfg.api_key_env), cfg.batch_size,
                        cfg.progress), tokenizer
