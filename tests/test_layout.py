"""The layering DESIGN.md asks for: the core imports torch and numpy only; nothing but the recipes
(``experiments/`` and the CLI) imports from ``goldfish.experiments``."""

import ast
from pathlib import Path

import goldfish

ROOT = Path(goldfish.__file__).parent


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_nothing_below_the_recipes_imports_experiments():
    offenders = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py")
                 if p.parent.name != "experiments" and p.name != "cli.py"
                 and any(m.startswith("goldfish.experiments") for m in _imports(p))]
    assert offenders == []


def test_core_imports_torch_and_numpy_only():
    for name in ("config.py", "hashing.py", "documents.py", "mask.py", "protect.py", "loss.py", "secrets.py"):
        third_party = {m.split(".")[0] for m in _imports(ROOT / name)} - {"goldfish", "__future__"}
        assert third_party <= {"torch", "numpy", "math", "dataclasses", "functools", "contextlib", "logging", "re", "pathlib", "typing", "weakref"}, name


def test_recipes_do_not_import_each_other():
    from goldfish.experiments import RECIPES

    recipes = {r.module for r in RECIPES.values()}
    for module in recipes:
        path = ROOT / (module.removeprefix("goldfish.").replace(".", "/") + ".py")
        assert not (_imports(path) & (recipes - {module})), module


def test_mask_rules_build_on_documents_not_on_each_other():
    """mask.py composes the rules; the rules (protect.py, ...) import the boundary helpers, never mask.py."""
    assert "goldfish.documents" in _imports(ROOT / "protect.py")
    assert "goldfish.mask" not in _imports(ROOT / "protect.py")
    assert "goldfish.documents" in _imports(ROOT / "mask.py")
