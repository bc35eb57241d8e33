"""Every public name of ferlib has one import path (issue 25): no module re-exports a name it does not define.

A *re-export* is a ``from X import name`` at module level (X a module of the package) where ``name`` is listed
in the importing module's ``__all__`` or used nowhere in it: the name is then importable from two modules while
only one of them does anything with it (``engine/metrics.py`` re-exporting ``ferlib.metrics``, ``viz/io.py``
handing on ``ferlib.run_dir``' readers, ``data/labels.py`` passing on nine names of ``ferlib.labels``). The one
exception is a package's own ``__init__``, which may gather the names defined inside that package (its public
API: ``from ferlib.data import load_dataset``), never another package's. Every module is imported
(``pkgutil.walk_packages``), then its source is read with ``ast`` to see what it does with each imported name.

The users hold to the same path: every ``from ferlib.x import name`` in ferlib, the tests, the benchmarks and the
notebooks names the module that defines ``name`` (or the ``__init__`` of a package holding that module), never a
module that merely imports it for its own use (``from ferlib.tables import find_runs``, ``from ferlib.engine.training
import DataNotFoundError``). Nor does a module give one object a second name (``RAFDB_ORDER = RAFDB``).
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import json
import pkgutil
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

#: Modules never imported: running ``python -m ferlib``'s entry point would start the command-line tool.
NOT_IMPORTED = ("__main__",)


@dataclass(frozen=True)
class Walk:
    modules: dict            # name -> imported module
    optional: dict           # name -> the missing third-party module it needs


def walk(root: str) -> Walk:
    """Import every module of package ``root``. A module whose import fails for want of a third-party package is
    recorded in ``optional``; a failing import of the package's own modules is an error and raises."""
    package = importlib.import_module(root)
    modules, optional = {root: package}, {}

    def set_aside(name: str) -> None:  # also walk_packages' onerror, which would otherwise hide a failing package
        err = sys.exc_info()[1]
        missing = getattr(err, "name", None) or ""
        if not isinstance(err, ImportError) or not missing or missing.split(".")[0] == root:
            raise err
        optional[name] = missing

    for info in pkgutil.walk_packages(package.__path__, root + ".", onerror=set_aside):
        if info.name.rpartition(".")[2] in NOT_IMPORTED:
            continue
        try:
            modules[info.name] = importlib.import_module(info.name)
        except ImportError:
            set_aside(info.name)
    return Walk(modules, optional)


def _module_level(tree: ast.Module):
    """The statements that run when the module is imported (not inside functions or classes)."""
    stack = list(tree.body)
    while stack:
        node = stack.pop(0)
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            stack[:0] = [c for c in ast.iter_child_nodes(node) if isinstance(c, ast.stmt)]


def _used_names(tree: ast.Module) -> set[str]:
    """Every name the module reads, string annotations (``"LockHolder | None"``) included."""
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    for node in ast.walk(tree):
        for ann in (getattr(node, "annotation", None), getattr(node, "returns", None)):
            if isinstance(ann, ast.Constant) and isinstance(ann.value, str):
                try:
                    used |= {n.id for n in ast.walk(ast.parse(ann.value, mode="eval")) if isinstance(n, ast.Name)}
                except SyntaxError:
                    pass
    return used


def _parse(module) -> ast.Module:
    return ast.parse(Path(module.__file__).read_text(), module.__file__)


def _imported_from(module, name: str, root: str) -> str | None:
    """The module of package ``root`` that ``module`` takes ``name`` from at module level, or None."""
    for node in _module_level(_parse(module)):
        if isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == name for a in node.names):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), module.__package__ or "")
            return base if base.split(".")[0] == root else None
    return None


def defined_in(base: str, name: str, root: str) -> str:
    """The module that defines ``name`` imported from module ``base``: a class's or function's ``__module__``,
    else (a constant) the end of the chain of ``from … import`` statements starting at ``base``."""
    obj = getattr(importlib.import_module(base), name, None)
    home = getattr(obj, "__module__", None) if inspect.isclass(obj) or inspect.isroutine(obj) else None
    if isinstance(home, str) and home.split(".")[0] == root:
        return home
    seen = {base}
    while (nxt := _imported_from(importlib.import_module(base), name, root)) and nxt not in seen:
        seen.add(nxt)
        base = nxt
    return base


def _is_submodule(base: str, name: str) -> bool:
    try:
        return importlib.util.find_spec(f"{base}.{name}") is not None
    except ModuleNotFoundError:  # base is a module, not a package
        return False


def _is_package(module) -> bool:
    return hasattr(module, "__path__")


def _inside(module_name: str, package_name: str) -> bool:
    return module_name == package_name or module_name.startswith(package_name + ".")


def reexports(module, root: str) -> list[str]:
    """One line per name ``module`` re-exports from another module of ``root`` (see the module docstring)."""
    tree = _parse(module)
    used = _used_names(tree)
    exported = set(getattr(module, "__all__", ()))
    found = []
    for node in _module_level(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        base = importlib.util.resolve_name("." * node.level + (node.module or ""), module.__package__ or "")
        if base.split(".")[0] != root:
            continue
        for alias in node.names:
            bound = alias.asname or alias.name
            if alias.name == "*":
                found.append(f"{module.__name__}: `from {base} import *` re-exports every name of {base}")
                continue
            if bound.startswith("_") or _is_submodule(base, alias.name):
                continue  # a private name, or a submodule (imported for its side effects or its namespace)
            if bound not in exported and bound in used:
                continue  # imported to be used here
            home = defined_in(base, alias.name, root)
            if _is_package(module) and _inside(home, module.__name__):
                continue  # a package's __init__ gathering its own names
            why = "lists it in __all__" if bound in exported else "never uses it"
            found.append(f"{module.__name__}: re-exports {bound} (defined in {home}; imported from {base}, {why}); "
                         f"import it from {home} where it is needed")
    return found


def aliases(module, root: str) -> list[str]:
    """One line per public module-level ``NAME = other`` where ``other`` (a name or ``a.b`` chain) is a name the
    module defines or takes from ``root``: a second name for one object (``RAFDB_ORDER = RAFDB``)."""
    tree = _parse(module)
    own = set()
    for node in _module_level(tree):
        if isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), module.__package__ or "")
            own |= {a.asname or a.name for a in node.names} if base.split(".")[0] == root else set()
        elif isinstance(node, ast.Import):
            own |= {(a.asname or a.name).split(".")[0] for a in node.names if a.name.split(".")[0] == root}
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            own.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            own |= {t.id for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                    if isinstance(t, ast.Name)}
    found = []
    for node in _module_level(tree):
        if not isinstance(node, (ast.Assign, ast.AnnAssign)) or not isinstance(node.value, (ast.Name, ast.Attribute)):
            continue
        head = node.value
        while isinstance(head, ast.Attribute):
            head = head.value
        if not (isinstance(head, ast.Name) and head.id in own):
            continue
        for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
            if isinstance(target, ast.Name) and not target.id.startswith("_"):
                found.append(f"{module.__name__}:{node.lineno}: {target.id} = {ast.unparse(node.value)} is a second "
                             f"name for one object; use {ast.unparse(node.value)}")
    return found


def _notebook_code(path: Path) -> str:
    """The code cells of a notebook, IPython magics and shell lines left out."""
    cells = json.loads(path.read_text())["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    return re.sub(r"^\s*[%!].*$", "", code, flags=re.M)


def indirect_imports(sources: dict[str, str], root: str) -> list[str]:
    """``file:line`` for each ``from <root module> import name`` (anywhere, inside functions too) whose module
    neither defines ``name`` nor is a package holding the module that does, or lacks ``name`` altogether."""
    found = []
    for where, source in sources.items():
        for node in ast.walk(ast.parse(source, where)):
            if not (isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == root):
                continue
            module = importlib.import_module(node.module)
            for alias in node.names:
                if alias.name == "*" or _is_submodule(node.module, alias.name):
                    continue
                if not hasattr(module, alias.name):
                    found.append(f"{where}:{node.lineno} imports {alias.name} from {node.module}, "
                                 "which has no such name")
                    continue
                home = defined_in(node.module, alias.name, root)
                if home != node.module and not (_is_package(module) and _inside(home, node.module)):
                    found.append(f"{where}:{node.lineno} imports {alias.name} from {node.module}; "
                                 f"it is defined in {home}: import it from there")
    return found


def check(root: str) -> tuple[list[str], dict]:
    """Every re-export in package ``root`` and the modules left out for want of an optional package."""
    walked = walk(root)
    found = [line for name in sorted(walked.modules)
             for line in reexports(walked.modules[name], root) + aliases(walked.modules[name], root)]
    return found, walked.optional


# ---------------------------------------------------------------------------------------------
# ferlib
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ferlib_check() -> tuple[list[str], dict]:
    return check("ferlib")


def test_every_ferlib_name_has_one_import_path(ferlib_check):
    found, _ = ferlib_check
    assert found == [], "\n".join(found)


def _user_sources() -> dict[str, str]:
    repo = Path(__file__).resolve().parents[2]
    files = [*sorted((repo / "ferlib").rglob("*.py")), *sorted((repo / "tests").rglob("*.py")),
             *sorted((repo / "benchmarks").rglob("*.py"))]
    sources = {str(f.relative_to(repo)): f.read_text() for f in files}
    for nb in sorted((repo / "notebooks").glob("*.ipynb")):
        sources[str(nb.relative_to(repo))] = _notebook_code(nb)
    return sources


def test_every_user_imports_a_ferlib_name_from_its_one_path(ferlib_check):
    _, optional = ferlib_check
    sources = {where: src for where, src in _user_sources().items()
               if not any(f"import {m}" in src or f"from {m} import" in src for m in optional)}
    found = indirect_imports(sources, "ferlib")
    assert found == [], "\n".join(found)


def test_every_ferlib_module_was_checked(ferlib_check):
    _, optional = ferlib_check
    if optional:
        pytest.skip("not checked, an optional package is missing: "
                    + ", ".join(f"{m} (needs {dep})" for m, dep in sorted(optional.items())))


# ---------------------------------------------------------------------------------------------
# The checker on throw-away packages: each kind of shim is reported, naming the offender
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def make_package(tmp_path, monkeypatch, request):
    """``make_package({"sub/mod.py": source, ...})`` -> the name of a fresh package holding those files."""
    name = "shimcheck_" + "".join(c if c.isalnum() else "_" for c in request.node.name)
    monkeypatch.syspath_prepend(str(tmp_path))

    def make(files: dict[str, str]) -> str:
        (tmp_path / name).mkdir()
        for rel, source in {"__init__.py": "", **files}.items():
            path = tmp_path / name / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.parent != tmp_path / name and not (path.parent / "__init__.py").exists():
                (path.parent / "__init__.py").write_text("")
            path.write_text(textwrap.dedent(source))
        importlib.invalidate_caches()
        return name

    yield make
    for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[mod]


#: A leaf defining a function, a class and a constant, and an engine package using them honestly.
BASE = {
    "leaf.py": """
        SETS = {"a": 1}
        def accuracy(x):
            return x
        class Label:
            pass
        """,
    "engine/__init__.py": "from .loop import fit\n__all__ = ['fit']\n",
    "engine/loop.py": """
        from __future__ import annotations
        from ..leaf import SETS, accuracy, Label
        def fit(x) -> "Label":
            return accuracy(x) + len(SETS)
        """,
}


def test_an_honest_package_has_no_findings(make_package):
    pkg = make_package(BASE)
    assert check(pkg) == ([], {})


def test_a_shim_module_listing_another_packages_names_in_all_is_reported(make_package):
    """engine/metrics.py's kind: a module that only hands on ``ferlib.metrics``."""
    pkg = make_package({**BASE, "engine/metrics.py": "from ..leaf import accuracy\n__all__ = ['accuracy']\n"})
    assert check(pkg)[0] == [
        f"{pkg}.engine.metrics: re-exports accuracy (defined in {pkg}.leaf; imported from {pkg}.leaf, lists it in "
        f"__all__); import it from {pkg}.leaf where it is needed"]


def test_a_used_name_listed_in_all_is_still_a_re_export(make_package):
    """engine/loop.py's kind: RUN_FILES is used there, but ``__all__`` offers it as loop's own."""
    pkg = make_package({**BASE, "engine/loop.py": BASE["engine/loop.py"] + "__all__ = ['fit', 'SETS']\n"})
    found, _ = check(pkg)
    assert len(found) == 1 and found[0].startswith(f"{pkg}.engine.loop: re-exports SETS (defined in {pkg}.leaf;")


def test_an_unused_import_of_a_sibling_module_is_reported(make_package):
    """viz/io.py's kind and the loader names of engine/loop.py: imported, never used, so only passed on."""
    pkg = make_package({**BASE, "engine/loader.py": "class Sampler:\n    pass\n",
                        "engine/step.py": "from .loader import Sampler  # noqa: F401\n"})
    assert check(pkg)[0] == [
        f"{pkg}.engine.step: re-exports Sampler (defined in {pkg}.engine.loader; imported from {pkg}.engine.loader, "
        f"never uses it); import it from {pkg}.engine.loader where it is needed"]


def test_constants_passed_on_through_a_chain_name_their_defining_module(make_package):
    """data/labels.py's kind: constants (no ``__module__``) re-exported under ``# noqa``, then again by the
    package's ``__init__``; both are reported, and both name the module that defines the constant."""
    pkg = make_package({**BASE, "data/labels.py": "from ..leaf import SETS, Label  # noqa: F401\n",
                        "data/__init__.py": "from .labels import SETS\n__all__ = ['SETS']\n"})
    found, _ = check(pkg)
    assert [line.split(" (")[0] for line in found] == [
        f"{pkg}.data: re-exports SETS", f"{pkg}.data.labels: re-exports SETS", f"{pkg}.data.labels: re-exports Label"]
    assert all(f"(defined in {pkg}.leaf;" in line for line in found)


def test_a_package_init_may_gather_its_own_names_but_not_another_packages(make_package):
    """engine/__init__'s DataNotFoundError: it came from the data package through engine/training.py."""
    pkg = make_package({**BASE, "data/errors.py": "class DataNotFoundError(FileNotFoundError):\n    pass\n",
                        "data/__init__.py": "from .errors import DataNotFoundError\n",  # its own: fine
                        "engine/training.py": "from ..data import DataNotFoundError\n"
                                         "def train():\n    raise DataNotFoundError\n",
                        "engine/__init__.py": "from .loop import fit\nfrom .training import DataNotFoundError, train\n"})
    found, _ = check(pkg)
    assert len(found) == 1 and found[0].startswith(
        f"{pkg}.engine: re-exports DataNotFoundError (defined in {pkg}.data.errors; imported from {pkg}.engine.training,")


def test_a_user_importing_through_a_module_that_only_uses_the_name_is_reported(make_package):
    """``from ferlib.tables import find_runs``: tables uses find_runs, but it is ferlib.run_dir's name."""
    pkg = make_package({**BASE, "data/errors.py": "class DataNotFoundError(FileNotFoundError):\n    pass\n",
                        "data/__init__.py": "from .errors import DataNotFoundError\n"})
    user = (f"from {pkg}.engine.loop import fit, accuracy\n"     # fit: loop's own; accuracy: the leaf's
            f"from {pkg}.data import DataNotFoundError\n"         # the package holding data/errors.py: fine
            f"def later():\n    from {pkg}.engine import nothing_here\n")
    assert indirect_imports({"notebook.ipynb": user}, pkg) == [
        f"notebook.ipynb:1 imports accuracy from {pkg}.engine.loop; it is defined in {pkg}.leaf: import it from there",
        f"notebook.ipynb:4 imports nothing_here from {pkg}.engine, which has no such name"]


def test_an_alias_is_reported(make_package):
    """data/synthetic.py's ``RAFDB_ORDER = RAFDB`` kind: a second module-level name for a name already there."""
    pkg = make_package({**BASE, "faces.py": "from . import leaf\nfrom .leaf import SETS\nimport math\n"
                                            "ORDER = SETS\nscore = leaf.accuracy\nTAU = math.tau\n"})
    assert check(pkg)[0] == [f"{pkg}.faces:4: ORDER = SETS is a second name for one object; use SETS",
                             f"{pkg}.faces:5: score = leaf.accuracy is a second name for one object; use leaf.accuracy"]


def test_a_star_import_is_reported(make_package):
    pkg = make_package({**BASE, "compat.py": "from .leaf import *\n"})
    assert check(pkg)[0] == [f"{pkg}.compat: `from {pkg}.leaf import *` re-exports every name of {pkg}.leaf"]


def test_a_module_needing_a_missing_optional_package_is_set_aside_by_name(make_package):
    pkg = make_package({**BASE, "fast.py": "import not_installed_kernels_xyz\n"})
    assert check(pkg) == ([], {f"{pkg}.fast": "not_installed_kernels_xyz"})


def test_a_broken_module_of_the_package_itself_fails_the_walk(make_package):
    pkg = make_package({**BASE, "broken.py": "from .gone import thing\n"})
    with pytest.raises(ImportError, match="gone"):
        check(pkg)


def test_a_subpackage_needing_an_optional_package_is_set_aside_and_not_walked_into(make_package):
    pkg = make_package({**BASE, "kernels/__init__.py": "import not_installed_kernels_xyz\n",
                        "kernels/scan.py": "from ..leaf import accuracy\n__all__ = ['accuracy']\n"})
    assert check(pkg) == ([], {f"{pkg}.kernels": "not_installed_kernels_xyz"})
