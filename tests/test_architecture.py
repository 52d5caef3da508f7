"""The folders are the data flow: every import points one way, and no module uses another package's private names.

Imports are read from the source with ``ast`` — module level *and* inside functions (a deferred import is
still a dependency) — so a cycle hidden behind a function-level import fails here too.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "workbench"

#: allowed import direction: a package may import from its own layer's packages' lower layers only
LAYERS = [
    {"_validation", "_threads", "_locks", "_memory", "version"},
    {"results"},  # the one schema; its functions declare their parameters (_validation)
    {"data"},
    {"models"},
    {"runs"},
    {"activations"},
    {"probing", "similarity", "spectrum", "transfer"},  # the measures: pure functions of arrays
    {"train"},
    {"dynamics", "saliency", "interventions", "mechanics"},  # analyses of models and checkpoints
    {"measures"},  # the registry: every measure above, by name
    {"study"},
    {"executors", "sweep"},  # engines (a process pool, Ray, submitit) that run a study's jobs; grids from overrides
    {"figures"},
    {"findings", "demo"},
    {"dashboards"},
    {"cli"},
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(module: str) -> list[tuple[str, str, int]]:
    """(imported module, imported name or "", line) for every workbench import in ``module``."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "workbench":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((sub, "", node.lineno) if sub in MODULES else (target, alias.name, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, "", node.lineno) for a in node.names if a.name.split(".")[0] == "workbench"]
    return found


def _package(module: str) -> str:
    """The top-level package (``workbench.train.objectives`` → ``train``); ``""`` for the root facade."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_package_has_a_layer():
    packages = {_package(m) for m in MODULES} - {""}
    assert packages <= set(LAYER), f"packages without a layer in LAYERS: {sorted(packages - set(LAYER))}"


def test_imports_point_one_way():
    """The root ``workbench/__init__`` is the facade (it re-exports lazily) and may import anything; every
    other module imports only from its own package or a lower layer."""
    wrong = []
    for module in MODULES:
        src = _package(module)
        if not src:
            continue
        for target, _name, line in _imports(module):
            dst = _package(target)
            if dst and dst != src and LAYER[dst] >= LAYER[src]:
                wrong.append(f"{MODULES[module].relative_to(PACKAGE.parent)}:{line} {src} -> {dst}")
            if not dst:
                wrong.append(f"{MODULES[module].relative_to(PACKAGE.parent)}:{line} {src} -> the root facade")
    assert not wrong, "imports against the data flow:\n" + "\n".join(wrong)


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _private_imports() -> list[str]:
    wrong = []
    for module in MODULES:
        for target, name, line in _imports(module):
            if _package(target) == _package(module):
                continue
            private_module = any(_private(part) for part in target.split(".")[2:])
            if private_module or (name and _private(name)):
                wrong.append(f"{MODULES[module]}:{line} imports "
                             f"{target}{'.' + name if name else ''}")
    return wrong


def test_no_module_uses_another_packages_private_names():
    wrong = _private_imports()
    assert not wrong, "private names used across packages:\n" + "\n".join(wrong)


@pytest.mark.parametrize("source", ["from ..train.recorders import _param_groups",
                                    "from ..activations import _pool\n",
                                    "def f():\n    from ..dashboards._base import update_figure\n"])
def test_the_checks_see_a_private_import_inside_a_function_too(tmp_path, monkeypatch, source):
    """The checks above can fail: a relative, possibly deferred, import of another package's private name."""
    path = tmp_path / "probe.py"
    path.write_text(source + "\n")
    monkeypatch.setitem(MODULES, "workbench.dynamics.probe", path)
    assert any("probe.py" in w for w in _private_imports())
