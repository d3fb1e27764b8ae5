"""Named chat templates, for tokenizers without one (a base model trained into a chat model, as
FastChat does) or to replace a model's own: ``--chat-template NAME|FILE``.

Each is a Jinja template in HF's format, written here after the published formats, with
``{% generation %}`` around every assistant reply and its end-of-turn marker (so the supervised
tokens come straight from HF's assistant mask):

    chatml        <|im_start|>ROLE\\nCONTENT<|im_end|>\\n per message; generation prompt <|im_start|>assistant\\n
    llama3        BOS, then <|start_header_id|>ROLE<|end_header_id|>\\n\\nCONTENT<|eot_id|> per message (content trimmed)
    vicuna_v1.1   FastChat's: "SYSTEM USER: Q ASSISTANT: A</s>USER: ..." with the tokenizer's EOS after each reply
                  and FastChat's default system prompt unless the first message is a system one

``MARKERS`` are the tokens a template's text relies on; ``apply_chat_template`` adds the ones a
tokenizer lacks as special tokens (the model's embeddings must then grow to ``len(tokenizer)``).
"""

from __future__ import annotations

from pathlib import Path

VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
                 "detailed, and polite answers to the user's questions.")

CHAT_TEMPLATES = {
    "chatml": (
        "{%- for m in messages -%}"
        "{%- if m['role'] == 'assistant' -%}"
        "{{- '<|im_start|>assistant\\n' -}}{% generation %}{{- m['content'] + '<|im_end|>' -}}{% endgeneration %}{{- '\\n' -}}"
        "{%- else -%}{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' -}}{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
    ),
    "llama3": (
        "{%- if bos_token -%}{{- bos_token -}}{%- endif -%}"
        "{%- for m in messages -%}"
        "{{- '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' -}}"
        "{%- if m['role'] == 'assistant' -%}{% generation %}{{- (m['content'] | trim) + '<|eot_id|>' -}}{% endgeneration %}"
        "{%- else -%}{{- (m['content'] | trim) + '<|eot_id|>' -}}{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}{%- endif -%}"
    ),
    "vicuna_v1.1": (
        "{%- if messages[0]['role'] == 'system' -%}{%- set system = messages[0]['content'] -%}{%- set turns = messages[1:] -%}"
        "{%- else -%}{%- set system = '" + VICUNA_SYSTEM.replace("'", "\\'") + "' -%}{%- set turns = messages -%}{%- endif -%}"
        "{{- system + ' ' -}}"
        "{%- for m in turns -%}"
        "{%- if m['role'] == 'user' -%}{{- 'USER: ' + m['content'] + ' ' -}}"
        "{%- elif m['role'] == 'assistant' -%}{{- 'ASSISTANT:' -}}{% generation %}{{- ' ' + m['content'] + eos_token -}}{% endgeneration %}"
        "{%- else -%}{{- raise_exception('the vicuna_v1.1 template takes a first system message, then user and assistant messages') -}}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- 'ASSISTANT:' -}}{%- endif -%}"
    ),
}
MARKERS = {"chatml": ("<|im_start|>", "<|im_end|>"), "llama3": ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
           "vicuna_v1.1": ()}
END_OF_TURN = {"chatml": "<|im_end|>", "llama3": "<|eot_id|>"}  # vicuna_v1.1 ends a reply with the tokenizer's EOS


def resolve_chat_template(spec: str) -> tuple[str, tuple[str, ...]]:
    """(template text, markers) of a template name (``CHAT_TEMPLATES``) or a Jinja file; ValueError otherwise."""
    if spec in CHAT_TEMPLATES:
        return CHAT_TEMPLATES[spec], MARKERS[spec]
    path = Path(spec)
    if path.is_file():
        try:
            return path.read_text(encoding="utf-8"), ()
        except UnicodeDecodeError:
            raise ValueError(f"--chat-template {spec}: not a UTF-8 text file") from None
    raise ValueError(f"--chat-template {spec}: neither a template name ({', '.join(CHAT_TEMPLATES)}) nor a Jinja file")


def apply_chat_template(tokenizer, spec: str) -> list[str]:
    """Set ``tokenizer.chat_template`` from ``spec`` (name or file), adding the template's markers the
    tokenizer lacks as special tokens; returns the tokens added (grow the model's embeddings for them)."""
    template, markers = resolve_chat_template(spec)
    vocab = tokenizer.get_vocab()
    added = [m for m in markers if m not in vocab]
    if added:
        tokenizer.add_special_tokens({"extra_special_tokens": added}, replace_extra_special_tokens=False)
    tokenizer.chat_template = template
    if spec == "vicuna_v1.1" and tokenizer.eos_token is None:
        raise ValueError("--chat-template vicuna_v1.1 ends each reply with the tokenizer's EOS token, and this tokenizer has none")
    return added
