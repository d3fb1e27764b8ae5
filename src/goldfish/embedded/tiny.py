"""The embedded tokenizer (BPE trained on the embedded corpus) and tiny Llama models.

Both save as ordinary HF folders, cached under the user cache dir keyed by corpus and settings, so
``goldfish audit --model DIR`` and ``AutoModelForCausalLM.from_pretrained`` work on them as on any
real checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from goldfish.cache import atomic_dir, cache_dir, fingerprint

VOCAB_SIZE = 8192
EOS, PAD = "<|endoftext|>", "<|pad|>"
CHAT_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")

# Chat template: one "<|role|>\n...<|end|>\n" block a message. The assistant's text and its
# closing <|end|> sit inside {% generation %} so `return_assistant_tokens_mask` (and TRL's
# assistant-only loss) mark exactly the tokens the model must learn to emit.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{- '<|assistant|>\\n' -}}{% generation %}{{- message['content'] + '<|end|>' -}}{% endgeneration %}{{- '\\n' -}}"
    "{%- else -%}"
    "{{- '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|assistant|>\\n' -}}{%- endif -%}"
)

TINY_CONFIGS = {
    # name: (hidden, layers, heads, intermediate)
    "tiny": (256, 4, 4, 704),
    "micro": (64, 2, 2, 176),
}


def embedded_tokenizer_dir() -> Path:
    """HF tokenizer folder of the embedded BPE tokenizer, trained on first use and cached."""
    from goldfish.embedded.corpus import PARTS, corpus_fingerprint, corpus_part

    key = fingerprint("tokenizer-v1", corpus_fingerprint(), VOCAB_SIZE, CHAT_TEMPLATE, CHAT_TOKENS)
    final = cache_dir() / "tokenizer" / key
    if (final / "tokenizer.json").exists():
        return final
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[EOS, PAD, *CHAT_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator((d["text"] for part in PARTS for d in corpus_part(part)), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, pad_token=PAD, additional_special_tokens=list(CHAT_TOKENS)
    )
    fast.chat_template = CHAT_TEMPLATE
    with atomic_dir(final) as tmp:
        fast.save_pretrained(tmp)
    return final


def load_embedded_tokenizer():
    from transformers import AutoTokenizer

    from goldfish.models import from_pretrained

    return from_pretrained(AutoTokenizer, str(embedded_tokenizer_dir()))


def tiny_llama_config(tokenizer, size: str = "tiny", max_positions: int = 1024, vocab_size: int | None = None):
    """A small LlamaConfig matching ``tokenizer`` (special-token ids, vocab) of a named size."""
    from transformers import LlamaConfig

    if size not in TINY_CONFIGS:
        raise ValueError(f"unknown tiny model size {size!r}; choose one of {', '.join(TINY_CONFIGS)}")
    hidden, layers, heads, inter = TINY_CONFIGS[size]
    return LlamaConfig(
        vocab_size=vocab_size or len(tokenizer),
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
