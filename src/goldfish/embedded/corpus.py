"""The embedded corpus: real English prose that ships with CPython, read at run time.

Parts (deterministic for a given Python build):
    targets     the reference-manual topics of ``pydoc_data.topics`` (~80 documents), in a fixed
                shuffled order; experiments take the first N as documents to (not) memorize and the
                rest as non-members
    background  docstrings of the standard library (read with ``ast``, no imports), ~95%
    validation  the other ~5% of docstrings (held out by a hash of the document id)
"""

from __future__ import annotations

import ast
import json
import random
import sys
import sysconfig
import zlib
from functools import lru_cache
from pathlib import Path

from goldfish.cache import cache_dir, fingerprint, write_text_atomic

PARTS = ("targets", "background", "validation")
_SKIP_DIRS = {"test", "tests", "idlelib", "site-packages", "lib2to3", "tkinter", "turtledemo", "ensurepip", "pydoc_data"}
_MIN_DOC_CHARS = 200


def _pydoc_topics() -> list[dict]:
    from pydoc_data.topics import topics

    docs = [{"id": f"topic:{name}", "text": text.strip()} for name, text in sorted(topics.items())]
    random.Random(0).shuffle(docs)
    return docs


def _stdlib_docstrings() -> list[dict]:
    root = Path(sysconfig.get_paths()["stdlib"])
    docs = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if _SKIP_DIRS.intersection(rel.parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        module = ".".join(rel.with_suffix("").parts)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= _MIN_DOC_CHARS:
                    name = module if isinstance(node, ast.Module) else f"{module}.{node.name}:{node.lineno}"
                    docs.append({"id": f"doc:{name}", "text": doc.strip()})
    return docs


@lru_cache(maxsize=1)
def _all_parts() -> dict[str, list[dict]]:
    key = fingerprint("corpus-v1", sys.version, sysconfig.get_paths()["stdlib"])
    path = cache_dir() / "corpus" / f"{key}.json"
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    docstrings = _stdlib_docstrings()
    held = [zlib.crc32(d["id"].encode()) % 20 == 0 for d in docstrings]
    parts = {
        "targets": _pydoc_topics(),
        "background": [d for d, h in zip(docstrings, held) if not h],
        "validation": [d for d, h in zip(docstrings, held) if h],
    }
    write_text_atomic(path, json.dumps(parts))
    return parts


def corpus_part(name: str) -> list[dict]:
    """Documents ``{"id", "text"}`` of one part (a fresh list; the dicts are shared, don't mutate)."""
    if name not in PARTS:
        raise ValueError(f"unknown embedded corpus part {name!r}; choose one of {', '.join(PARTS)}")
    return list(_all_parts()[name])


def corpus_fingerprint() -> str:
    """Changes whenever any embedded text changes (cache key for tokenizers and models)."""
    return fingerprint({name: [d["text"] for d in docs] for name, docs in _all_parts().items()})
