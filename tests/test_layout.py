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
                 if "experiments" not in p.relative_to(ROOT).parts and p.name != "cli.py"
                 and any(m.startswith("goldfish.experiments") for m in _imports(p))]
    assert offenders == []


def test_core_imports_torch_and_numpy_only():
    for name in ("config.py", "hashing.py", "documents.py", "mask.py", "protect.py", "loss.py", "secrets.py"):
        third_party = {m.split(".")[0] for m in _imports(ROOT / name)} - {"goldfish", "__future__"}
        assert third_party <= {"torch", "numpy", "math", "dataclasses", "functools", "contextlib", "logging", "re", "pathlib", "typing", "weakref"}, name


def test_every_recipe_is_a_recipe_file_and_satisfies_the_protocol():
    from goldfish.experiments import RECIPES, Recipe

    files = {p.stem for p in (ROOT / "experiments" / "recipes").glob("*.py")} - {"__init__"}
    assert {r.module for r in RECIPES.values()} == {f"goldfish.experiments.recipes.{f}" for f in files}
    assert all(isinstance(r.load(), Recipe) for r in RECIPES.values())


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


def _module_graph() -> dict[str, set[str]]:
    """goldfish's modules -> the goldfish modules each imports anywhere in its file (function-level
    imports too: a lazy import still makes a circle of responsibilities), ``from a import b`` meaning
    module ``a.b`` where that is a module."""
    modules = {".".join(p.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__"): p
               for p in ROOT.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                deps |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                         for a in node.names} & modules.keys()
        graph[name] = deps - {name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (the modules in order, the first repeated at the end), or None."""
    state, path = {}, []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                return path[path.index(dep):] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        state[node] = "done"
        path.pop()
        return None

    return next((found for node in sorted(graph) if node not in state and (found := visit(node))), None)


def test_the_cycle_finder_finds_a_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_circle_in_goldfish():
    graph = _module_graph()
    assert "goldfish.utf8" in graph["goldfish.secrets"] and "goldfish.data.tokenize" in graph["goldfish.data.sources"]
    assert _cycle(graph) is None


CORE = ("data", "train.py", "train_config.py", "checkpoints.py", "resume.py", "saving.py", "out_folder.py", "audit", "experiments")
MAX_LINES = 50


def _functions(path: Path):
    """(name, lines from ``def`` to the last line, docstring included) of every function in the file."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.end_lineno - node.lineno + 1


def test_no_core_function_is_longer_than_50_lines():
    files = [p for name in CORE for p in ((ROOT / name).rglob("*.py") if (ROOT / name).is_dir() else [ROOT / name])]
    assert len(files) > len(CORE)  # the folders were read
    long = [f"{p.relative_to(ROOT)}:{name} ({n} lines)" for p in files for name, n in _functions(p) if n > MAX_LINES]
    assert long == []


def test_the_function_measure_counts_every_line(tmp_path):
    (tmp_path / "m.py").write_text('def f():\n    """doc."""\n    x = 1\n\n    return x\n\n\ndef g(): pass\n')
    assert list(_functions(tmp_path / "m.py")) == [("f", 5), ("g", 1)]
