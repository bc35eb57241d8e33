"""``import_submodules(__name__, __path__)``: how the registries find what registers itself.

A package whose every module registers something (a dataset reader, a model, a loss) imports them all
here, in name order, so that adding one is adding a file: no list to extend elsewhere. A module that
fails to import raises (never a silent gap in a registry, unlike ``find_spec`` guards). The static import
graph (``tests/docs/test_import_graph.py``) counts this call as the package importing each of its modules.
"""
from __future__ import annotations

import importlib
import pkgutil


def import_submodules(package: str, path) -> list[str]:
    """Import every module and subpackage directly inside ``package`` (whose ``__path__`` is ``path``), in
    name order, skipping private ``_``-names; returns their full names."""
    names = sorted(info.name for info in pkgutil.iter_modules(path) if not info.name.startswith("_"))
    for name in names:
        importlib.import_module(f"{package}.{name}")
    return [f"{package}.{name}" for name in names]
