"""Embedded benchmark tasks for lm-evaluation-harness, built from held-out embedded text.

Every item comes from the ``validation`` part of the embedded corpus (docstrings no recipe trains
on), split into words on whitespace; a context is up to ``CONTEXT_WORDS`` words before a position.
Three multiple-choice tasks (4 choices, chance 25%), scored by lm-eval from the log-likelihood of
each choice after the context:

    goldfish_word_order    the true next 8 words against 3 shuffles of the same words: the same
                           tokens in other orders, so only sequence modelling tells them apart
                           (no length or frequency bias)
    goldfish_cloze         the true next word against 3 other words of the same document (each
                           once, at least 4 letters)
    goldfish_next_passage  the true next 8 words against the 8 words at a random position of
                           3 other documents (length-normalised accuracy, ``acc_norm``, is the
                           one to read)

Items are drawn with a fixed seed. The tasks are written once into the user cache as JSON lines
and lm-eval YAML configs (``dataset_path: json`` on local files: nothing is downloaded), keyed by
the corpus; ``embedded_tasks_dir()`` returns the folder to pass as ``include_path``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from goldfish.cache import atomic_dir, cache_dir, fingerprint

TASKS = ("goldfish_word_order", "goldfish_cloze", "goldfish_next_passage")
TASKS_VERSION = "embedded-tasks-v1"  # bump when the items or configs change
CONTEXT_WORDS, CONTINUATION_WORDS, ITEMS_PER_DOCUMENT, SEED = 32, 8, 3, 1234
METRIC = {"goldfish_word_order": "acc", "goldfish_cloze": "acc", "goldfish_next_passage": "acc_norm"}  # the one to read


def _items(docs: list[list[str]], rng: random.Random) -> dict[str, list[dict]]:
    out = {name: [] for name in TASKS}
    for d, words in enumerate(docs):
        if len(words) < CONTEXT_WORDS // 2 + CONTINUATION_WORDS:
            continue
        others = [o for o in range(len(docs)) if o != d and len(docs[o]) >= CONTINUATION_WORDS]
        for _ in range(ITEMS_PER_DOCUMENT):
            p = rng.randrange(CONTEXT_WORDS // 2, len(words) - CONTINUATION_WORDS + 1)
            context, true = " ".join(words[max(0, p - CONTEXT_WORDS) : p]), words[p : p + CONTINUATION_WORDS]
            orders = [true]  # a list, not a set: the items must not depend on string hashing
            for _ in range(50):
                if len(orders) == 4:
                    break
                order = rng.sample(true, len(true))
                if order not in orders:
                    orders.append(order)
            if len(orders) == 4:
                out["goldfish_word_order"].append(_choice_item(context, " ".join(true), [" ".join(o) for o in orders[1:]], rng))
            passages = []
            for o in rng.sample(others, 3):
                q = rng.randrange(0, len(docs[o]) - CONTINUATION_WORDS + 1)
                passages.append(" ".join(docs[o][q : q + CONTINUATION_WORDS]))
            out["goldfish_next_passage"].append(_choice_item(context, " ".join(true), passages, rng))
            targets = [q for q in range(CONTEXT_WORDS // 2, len(words)) if _cloze_word(words[q])]
            if targets:
                q = rng.choice(targets)
                vocabulary = sorted({w for w in words if _cloze_word(w)} - {words[q]})
                if len(vocabulary) >= 3:
                    out["goldfish_cloze"].append(_choice_item(" ".join(words[max(0, q - CONTEXT_WORDS) : q]), words[q],
                                                              rng.sample(vocabulary, 3), rng))
    return out


def _cloze_word(word: str) -> bool:
    return word.isalpha() and len(word) >= 4


def _choice_item(context: str, true: str, distractors: list[str], rng: random.Random) -> dict:
    choices = [true, *distractors]
    rng.shuffle(choices)
    return {"context": context, "choices": choices, "label": choices.index(true)}


def _yaml(name: str, data_file: Path) -> str:
    return "\n".join([
        f"task: {name}", "dataset_path: json", "dataset_kwargs:", "  data_files:", f"    test: {json.dumps(str(data_file))}",
        "test_split: test", "output_type: multiple_choice", 'doc_to_text: "{{context}}"', 'doc_to_choice: "{{choices}}"',
        'doc_to_target: "{{label}}"', "metric_list:", *(line for m in ("acc", "acc_norm") for line in (
            f"  - metric: {m}", "    aggregation: mean", "    higher_is_better: true")),
        "metadata:", "  version: 1.0", ""])


def embedded_tasks_dir() -> Path:
    """The folder of the embedded tasks (JSON lines + lm-eval YAML), built on first use and cached."""
    from goldfish.embedded.corpus import corpus_fingerprint, corpus_part

    key = fingerprint(TASKS_VERSION, corpus_fingerprint(), CONTEXT_WORDS, CONTINUATION_WORDS, ITEMS_PER_DOCUMENT, SEED)
    final = cache_dir() / "eval_tasks" / key
    if all((final / f"{name}.yaml").is_file() for name in TASKS):
        return final
    items = _items([d["text"].split() for d in corpus_part("validation")], random.Random(SEED))
    with atomic_dir(final) as tmp:
        for name, rows in items.items():
            (tmp / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
            (tmp / f"{name}.yaml").write_text(_yaml(name, final / f"{name}.jsonl"), encoding="utf-8")
    return final
