"""Embedded benchmark tasks for lm-evaluation-harness, built from held-out embedded text.

Every item comes from the ``validation`` part of the embedded corpus (docstrings no recipe trains
on), split into words on whitespace; a context is up to ``CONTEXT_WORDS`` words before a position.
Two multiple-choice tasks (4 choices, chance 25%), scored by lm-eval from the log-likelihood of
each choice after the context (``acc``):

    goldfish_word_order    the true next 8 words against 3 shuffles of the same words: the same
                           tokens in other orders, so only sequence modelling tells them apart
                           (no length or frequency bias)
    goldfish_cloze         the true next word against 3 words (alphabetic, at least 4 letters)
                           that the document does not contain, drawn from the other documents:
                           only the context tells the right word

The 300-step tiny base scores 0.81 and 0.56 on them (a first design with distractors from the same
document gave 0.39 on the cloze, and the true next 8 words against 8 words of other documents
0.25, chance: dropped).

Items are drawn with a fixed seed. The tasks are written once into the user cache as JSON lines
and lm-eval YAML configs (``dataset_path: json`` on local files: nothing is downloaded; the Arrow
files ``datasets`` makes of them also go to the goldfish cache), keyed by the corpus; ``embedded_tasks_dir()`` returns the folder to pass as ``include_path``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from goldfish.cache import atomic_dir, cache_dir, fingerprint

TASKS = ("goldfish_word_order", "goldfish_cloze")
TASKS_VERSION = "embedded-tasks-v3"  # bump when the items or configs change
CONTEXT_WORDS, CONTINUATION_WORDS, ITEMS_PER_DOCUMENT, SEED = 24, 8, 3, 1234
METRIC = {"goldfish_word_order": "acc", "goldfish_cloze": "acc"}  # the one to read


def _items(docs: list[list[str]], rng: random.Random) -> dict[str, list[dict]]:
    out = {name: [] for name in TASKS}
    vocabularies = [sorted({w for w in words if _cloze_word(w)}) for words in docs]
    for words, own in zip(docs, vocabularies):
        if len(words) < CONTEXT_WORDS // 2 + CONTINUATION_WORDS:
            continue
        foreign = sorted({w for v in vocabularies for w in v} - set(words))
        targets = [q for q in range(CONTEXT_WORDS // 2, len(words)) if _cloze_word(words[q])]
        for _ in range(ITEMS_PER_DOCUMENT):
            p = rng.randrange(CONTEXT_WORDS // 2, len(words) - CONTINUATION_WORDS + 1)
            true = words[p : p + CONTINUATION_WORDS]
            orders = [true]  # a list, not a set: the items must not depend on string hashing
            for _ in range(50):
                if len(orders) == 4:
                    break
                order = rng.sample(true, len(true))
                if order not in orders:
                    orders.append(order)
            if len(orders) == 4:
                out["goldfish_word_order"].append(_choice_item(_context(words, p), " ".join(true), [" ".join(o) for o in orders[1:]], rng))
            if targets:
                q = rng.choice(targets)
                out["goldfish_cloze"].append(_choice_item(_context(words, q), words[q], rng.sample(foreign, 3), rng))
    return out


def _context(words: list[str], position: int) -> str:
    return " ".join(words[max(0, position - CONTEXT_WORDS) : position])


def _cloze_word(word: str) -> bool:
    return word.isalpha() and len(word) >= 4


def _choice_item(context: str, true: str, distractors: list[str], rng: random.Random) -> dict:
    choices = [true, *distractors]
    rng.shuffle(choices)
    return {"context": context, "choices": choices, "label": choices.index(true)}


def _yaml(name: str, data_file: Path) -> str:
    """lm-eval's task config; ``cache_dir`` keeps the Arrow files ``datasets`` makes of the JSON lines in
    the goldfish cache, not in ``~/.cache/huggingface/datasets``."""
    return "\n".join([
        f"task: {name}", "dataset_path: json", "dataset_kwargs:", f"  cache_dir: {json.dumps(str(cache_dir() / 'datasets'))}",
        "  data_files:", f"    test: {json.dumps(str(data_file))}",
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
