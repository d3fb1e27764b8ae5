"""Tokenizers with chat templates written (here) in the styles of the families people fine-tune,
none with {% generation %} tags except "generation": byte-level BPE (GPT-2/Llama-3/Qwen style) for
ChatML, Llama-3 and Phi-3, and a Metaspace BPE (SentencePiece style, newlines kept apart) for
Mistral and Gemma. Each entry: template, tokenizer kind, special tokens, end-of-turn marker."""

from functools import lru_cache

CHATML = (
    "{%- if messages[0]['role'] != 'system' -%}{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' -}}{%- endif -%}"
    "{%- for m in messages -%}{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' -}}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)
LLAMA3 = (
    "{{- bos_token -}}{%- for m in messages -%}"
    "{{- '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + (m['content'] | trim) + '<|eot_id|>' -}}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}{%- endif -%}"
)
MISTRAL = (
    "{{- bos_token -}}{%- for m in messages -%}"
    "{%- if m['role'] == 'user' -%}{{- '[INST] ' + m['content'] + ' [/INST]' -}}"
    "{%- elif m['role'] == 'assistant' -%}{{- ' ' + m['content'] + eos_token -}}"
    "{%- else -%}{{- raise_exception('Only user and assistant roles are supported') -}}{%- endif -%}{%- endfor -%}"
)
GEMMA = (
    "{{- bos_token -}}{%- for m in messages -%}{%- set role = 'model' if m['role'] == 'assistant' else m['role'] -%}"
    "{{- '<start_of_turn>' + role + '\\n' + (m['content'] | trim) + '<end_of_turn>\\n' -}}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<start_of_turn>model\\n' -}}{%- endif -%}"
)
PHI3 = (
    "{%- for m in messages -%}{{- '<|' + m['role'] + '|>\\n' + m['content'] + '<|end|>\\n' -}}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|assistant|>\\n' -}}{%- else -%}{{- eos_token -}}{%- endif -%}"
)
# A template that rewrites history (as reasoning models' templates drop past reasoning): every
# assistant turn but the last loses its text up to "</think>".
REWRITING = (
    "{%- for m in messages -%}{%- set c = m['content'] -%}"
    "{%- if m['role'] == 'assistant' and not loop.last and '</think>' in c -%}{%- set c = c.split('</think>')[-1] -%}{%- endif -%}"
    "{{- '<|im_start|>' + m['role'] + '\\n' + c + '<|im_end|>\\n' -}}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

STYLES = {
    # name: (template, kind, bos, eos, specials, end-of-turn marker)
    "chatml": (CHATML, "byte", None, "<|im_end|>", ["<|im_start|>", "<|im_end|>"], "<|im_end|>"),
    "llama3": (LLAMA3, "byte", "<|begin_of_text|>", "<|eot_id|>",
               ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], "<|eot_id|>"),
    "mistral": (MISTRAL, "metaspace", "<s>", "</s>", ["<s>", "</s>", "[INST]", "[/INST]"], "</s>"),
    "gemma": (GEMMA, "metaspace", "<bos>", "<eos>", ["<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"], "<end_of_turn>"),
    "phi3": (PHI3, "byte", None, "<|endoftext|>", ["<|endoftext|>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"], "<|end|>"),
    "generation": (None, "byte", None, "<|endoftext|>", [], "<|end|>"),  # the embedded template, with {% generation %}
    "rewriting": (REWRITING, "byte", None, "<|im_end|>", ["<|im_start|>", "<|im_end|>"], "<|im_end|>"),
}


@lru_cache(maxsize=None)
def _metaspace_backend():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from goldfish.embedded.corpus import corpus_part

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split("\n", "isolated"),
                                                 pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")])
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    trainer = trainers.BpeTrainer(vocab_size=1500, special_tokens=["<unk>", "<pad>"], show_progress=False,
                                  initial_alphabet=list("\n"))
    tok.train_from_iterator([d["text"] for d in corpus_part("targets")[:40]], trainer=trainer)
    return tok.to_str()


def chat_tokenizer(style: str):
    """A fast HF tokenizer with the style's special tokens and chat template."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from goldfish.embedded.tiny import load_embedded_tokenizer

    template, kind, bos, eos, specials, _ = STYLES[style]
    if style == "generation":
        return load_embedded_tokenizer()
    if kind == "byte":
        backend = Tokenizer.from_str(load_embedded_tokenizer().backend_tokenizer.to_str())
        tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<|pad|>")
    else:
        tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_metaspace_backend()), pad_token="<pad>", unk_token="<unk>")
    tok.add_special_tokens({"additional_special_tokens": specials})
    tok.eos_token = eos
    if bos:
        tok.bos_token = bos
    tok.chat_template = template
    return tok


def end_of_turn(style: str) -> str:
    return STYLES[style][5]


def chat_model_folder(path, style: str = "chatml", seed: int = 0):
    """A micro Llama built from a config, saved with the style's tokenizer as a HF model folder."""
    import torch
    from transformers import AutoModelForCausalLM

    from goldfish.embedded.tiny import tiny_llama_config

    tok = chat_tokenizer(style)
    torch.manual_seed(seed)
    config = tiny_llama_config(tok, "micro", max_positions=512, vocab_size=len(tok))
    config.bos_token_id = config.eos_token_id = tok.eos_token_id
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)
