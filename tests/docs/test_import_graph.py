"""The package layers of docs/design.md §2 hold: what each package loads in a fresh interpreter, which ferlib
module imports which (read with ``ast``, lazy imports inside functions included), and no import cycle.

Two views, because they catch different things: a fresh interpreter shows what ``import ferlib.x`` really
costs (third-party modules included); the static graph also sees the imports inside functions, which
run later (``viz`` training a model through a lazy ``from ferlib.engine import train`` is still viz
depending on the engine).
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[2] / "ferlib"

# ---------------------------------------------------------------------------------------------
# What a fresh interpreter loads
# ---------------------------------------------------------------------------------------------

#: Imported one per fresh interpreter; ``torchvision`` is the baseline of what torch's side loads alone.
IMPORTED = ("ferlib.models", "ferlib.weights", "ferlib.data", "ferlib.losses", "ferlib.viz", "ferlib.viz.confusion",
            "ferlib.viz.figures", "ferlib.metrics", "ferlib.recipes", "ferlib.engine", "ferlib.run_dir", "torchvision")

_PROBE = ("import json, sys, importlib; importlib.import_module(sys.argv[1]); "
          "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('ferlib', 'cv2', 'PIL', 'torch'))))")


def _loaded_by(module: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", _PROBE, module], cwd=PACKAGE_DIR.parent, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, f"import {module} failed:\n{out.stderr[-3000:]}"
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.fixture(scope="module")
def loaded() -> dict[str, set[str]]:
    """``{module: the ferlib / cv2 / PIL / torch modules importing it loads}``, one fresh interpreter each."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(IMPORTED, pool.map(_loaded_by, IMPORTED)))


def _under(names: set[str], *prefixes: str) -> list[str]:
    return sorted(n for n in names if any(n == p or n.startswith(p + ".") for p in prefixes))


def test_models_load_no_data_code_nor_image_libraries(loaded):
    assert _under(loaded["ferlib.models"], "ferlib.data") == []
    assert _under(loaded["ferlib.models"], "cv2") == []
    # PIL only as far as torchvision itself imports it
    assert _under(loaded["ferlib.models"] - loaded["torchvision"], "PIL") == []


def test_weights_load_no_models_and_no_data(loaded):
    assert _under(loaded["ferlib.weights"], "ferlib.models", "ferlib.data", "cv2", "PIL") == []


@pytest.mark.parametrize("module", ["ferlib.viz", "ferlib.viz.confusion", "ferlib.viz.figures"])
def test_viz_loads_no_engine_and_no_models(loaded, module):
    assert _under(loaded[module], "ferlib.engine", "ferlib.models", "ferlib.losses", "ferlib.weights") == []


def test_run_dir_is_a_leaf_below_engine_viz_tables(loaded):
    """The run directory's module: NumPy, YAML and ferlib.metrics only (no torch, no engine, no data)."""
    assert _under(loaded["ferlib.run_dir"], "ferlib") == ["ferlib", "ferlib.labels", "ferlib.metrics", "ferlib.run_dir"]
    assert _under(loaded["ferlib.run_dir"], "torch", "cv2", "PIL") == []


def test_metrics_is_a_leaf(loaded):
    assert _under(loaded["ferlib.metrics"], "ferlib") == ["ferlib", "ferlib.labels", "ferlib.metrics"]
    assert _under(loaded["ferlib.metrics"], "torch", "cv2", "PIL") == []


def test_data_and_recipes_load_no_models_nor_engine(loaded):
    for module in ("ferlib.data", "ferlib.recipes"):
        assert _under(loaded[module], "ferlib.models", "ferlib.engine", "ferlib.weights", "ferlib.viz") == [], module


def test_losses_and_engine_load_no_viz(loaded):
    assert _under(loaded["ferlib.losses"], "ferlib.engine", "ferlib.data", "ferlib.viz") == []
    assert _under(loaded["ferlib.engine"], "ferlib.viz") == []


@pytest.mark.parametrize("module", IMPORTED[:-1])
def test_nothing_loads_the_notebook_tools(loaded, module):
    assert "ferlib.notebooks" not in loaded[module]


# ---------------------------------------------------------------------------------------------
# The static import graph
# ---------------------------------------------------------------------------------------------

def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def _is_package(name: str) -> bool:
    return MODULES.get(name, Path()).name == "__init__.py"


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _imports_of(node: ast.AST, module: str) -> set[str]:
    """ferlib modules one ``import`` / ``from ... import`` statement names (a name that is a submodule counts as it)."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name.split(".")[0] == "ferlib"}
    if node.level:  # relative: resolved from the importing module's package
        package = module if _is_package(module) else module.rpartition(".")[0]
        base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
        base = f"{base}.{node.module}" if node.module else base
    else:
        base = node.module or ""
    if base.split(".")[0] != "ferlib":
        return set()
    subs = {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES}
    return subs | ({base} if len(subs) < len(node.names) else set())


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _walk(node: ast.AST, top_level: bool):
    """Import statements under ``node``; with ``top_level`` only those that run when the module is imported."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        elif top_level and (isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                            or _is_type_checking(child)):
            continue
        else:
            yield from _walk(child, top_level)


def import_graph(top_level: bool) -> dict[str, set[str]]:
    """``{module: the ferlib modules it imports}``. Importing ``a.b.c`` runs ``a.b`` first, so the package
    ``__init__`` modules on the way count as imported too, except the importer's own packages (a submodule
    reaching into its parent package, which is always imported before it, is no cycle)."""
    graph = {}
    for name, path in MODULES.items():
        own = set(_ancestors(name))
        targets = set()
        source = path.read_text()
        for node in _walk(ast.parse(source, str(path)), top_level):
            for target in _imports_of(node, name):
                targets |= {target, *_ancestors(target)}
        if "import_submodules(__name__, __path__)" in source:  # ferlib.discover: every module of the package
            targets |= {m for m in MODULES if m.rpartition(".")[0] == name and not m.rpartition(".")[2].startswith("_")}
        graph[name] = {t for t in targets if t in MODULES and t != name and t not in own}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None (iterative depth-first search)."""
    state = {}  # 1: on the current path, 2: done
    for root in sorted(graph):
        if root in state:
            continue
        path, stack = [root], [iter(sorted(graph[root]))]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def _edges(graph, source: str, target: str) -> list[str]:
    inside = lambda name, p: name == p or name.startswith(p + ".")  # noqa: E731
    return sorted(f"{a} -> {b}" for a, bs in graph.items() if inside(a, source) for b in bs if inside(b, target))


@pytest.fixture(scope="module")
def every_import() -> dict[str, set[str]]:
    return import_graph(top_level=False)


def test_graph_reader_sees_the_registrations():
    graph = import_graph(top_level=True)
    assert {"ferlib.models.mfer", "ferlib.models.registry", "ferlib.models.fermam"} <= graph["ferlib.models"]
    assert "ferlib.losses.rfloss" in graph["ferlib.losses"]
    assert "ferlib.weights.converters" in graph["ferlib.models.mfer"]
    assert {"ferlib.data.readers.rafdb", "ferlib.data.readers.synthetic"} <= graph["ferlib.data.readers"]
    assert "ferlib.data.readers" in graph["ferlib.data"]


@pytest.mark.parametrize("top_level", [True, False], ids=["at-import", "with-imports-inside-functions"])
def test_module_imports_are_acyclic(top_level):
    assert find_cycle(import_graph(top_level)) is None


def layer_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph between the layers ``ferlib.<name>`` (a package or a top-level module); edges inside a layer dropped."""
    layer = lambda name: ".".join(name.split(".")[:2])  # noqa: E731
    out = {layer(m): set() for m in graph if m != "ferlib"}
    for a, bs in graph.items():
        out.get(layer(a), set()).update(layer(b) for b in bs if b != "ferlib" and layer(b) != layer(a))
    return out


def test_layers_are_acyclic(every_import):
    """E.g. viz draws from ferlib.tables, so tables never imports viz (nor ablations, which plots with viz)."""
    assert find_cycle(layer_graph(every_import)) is None


@pytest.mark.parametrize("source, target", [
    ("ferlib.models", "ferlib.data"),       # docs/design.md §2: models know nothing of data
    ("ferlib.weights", "ferlib.models"),    # converters travel with their model; weights never import it
    ("ferlib.weights", "ferlib.data"),
    ("ferlib.viz", "ferlib.engine"),        # viz draws run directories; it never trains
    ("ferlib.metrics", "ferlib.engine"),
    ("ferlib.optim", "ferlib.engine"),      # the engine builds its optimiser from ferlib.optim, never the reverse
    ("ferlib.inference", "ferlib.quickstart"),  # prediction never trains (the quickstart's model is trained there)
    ("ferlib.inference", "ferlib.widgets"),     # nor builds notebook widgets
    ("ferlib.labels", "ferlib.data"),
    ("ferlib.data.synthetic_writers", "ferlib.data.synthetic_faces"),  # the renderer hands the writers its faces
    ("ferlib.run_dir", "ferlib.engine"),       # the run directory is a layer below everything that writes or reads it
    ("ferlib.run_dir", "ferlib.viz"),
    ("ferlib.run_dir", "ferlib.tables"),
    ("ferlib.run_dir", "ferlib.ablations"),
    ("ferlib.run_dir", "ferlib.models"),
    ("ferlib.run_dir", "ferlib.data"),
])
def test_no_import_against_the_layers_even_inside_functions(every_import, source, target):
    assert _edges(every_import, source, target) == []


def test_only_the_shell_commands_import_the_notebook_tools(every_import):
    assert _edges(every_import, "ferlib", "ferlib.notebooks") == ["ferlib.cli.demo -> ferlib.notebooks",
                                                                    "ferlib.cli.notebooks -> ferlib.notebooks"]


#: The run directory's files that :mod:`ferlib.run_dir` alone names, so that it alone writes them.
RUN_DIR_FILES = ("config.yaml", "metrics.jsonl", "summary.json", "plan.json", "ablation.json")


def _docstrings(tree: ast.AST) -> set[int]:
    return {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}


def run_file_literals() -> list[str]:
    """``module:line name`` for each string constant naming a run-directory file outside ``ferlib/run_dir.py``
    (a path component such as ``run_dir / "summary.json"``; prose that mentions the file does not count)."""
    hits = []
    for name, path in MODULES.items():
        if name == "ferlib.run_dir":
            continue
        tree = ast.parse(path.read_text(), str(path))
        docs = _docstrings(tree)
        hits += [f"{name}:{n.lineno} {n.value}" for n in ast.walk(tree)
                 if isinstance(n, ast.Constant) and id(n) not in docs and n.value in RUN_DIR_FILES]
    return sorted(hits)


def test_only_ferlib_run_dir_names_the_run_files():
    """config.yaml, metrics.jsonl, summary.json and plan.json are written (and found) through ferlib.run_dir.RunDir
    alone; any other module naming one writes or reads the run directory behind its back."""
    assert run_file_literals() == []


def test_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"b"}}) is None


def _package_of(module: str) -> str:
    """``ferlib.engine.training`` → ``ferlib.engine``; a top-level module is its own package."""
    return ".".join(module.split(".")[:2])


def private_imports_across_packages() -> list[str]:
    """``importer -> module._name`` for each private name one ferlib package takes from another (``_MODELS``,
    ``_LOSSES``, ``_save_predictions`` were such names: a contract no one declared)."""
    hits = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.ImportFrom) or node.module == "__future__":
                continue
            for target in _imports_of(node, name):
                if _package_of(target) == _package_of(name):
                    continue
                hits += [f"{name} -> {target}.{a.name}" for a in node.names
                         if a.name.startswith("_") and not a.name.startswith("__") and f"{target}.{a.name}" not in MODULES]
    return sorted(hits)


def test_no_package_imports_another_packages_private_names():
    assert private_imports_across_packages() == []


def test_registries_never_guard_their_own_modules_with_find_spec():
    """A ``find_spec`` guard around a ferlib module turns a misspelt or deleted module into models silently
    missing from the registry; optional third-party packages (mamba_ssm, facenet_pytorch) may be probed."""
    guarded = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("find_spec") and node.args:
                arg = node.args[0]
                if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)
                        and arg.value.split(".")[0] != "ferlib" and not arg.value.startswith(".")):
                    guarded.append(f"{name}:{node.lineno} {ast.unparse(node)}")
    assert guarded == []
