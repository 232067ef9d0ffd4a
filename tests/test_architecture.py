"""The layer order of docs/architecture.md, checked on the source: every import (lazy ones inside
functions too) runs down the layers, no import circle, and no function longer than 80 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).parents[1] / "src"

LAYERS = [  # lowest first, as docs/architecture.md lists them
    {"config", "errors", "labels", "metrics"},
    {"catalog"},
    {"preprocess"},
    {"sources"},
    {"models", "typicality"},
    {"outputs"},
    {"prediction", "remote"},
    {"training"},
    {"explain", "evaluation", "quantization", "similarity"},
    {"report", "demo"},
    {"scale", "service"},
    {"__init__"},
    {"cli"},
    {"__main__"},
]


def module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The galaxymorph modules a source file imports, wherever the import statement stands."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    for block in ast.walk(tree):  # imports for type checkers alone never run
        if isinstance(block, ast.If) and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING":
            block.body = []
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "." in node.value and node.value in MODULES:
            found.add(node.value)  # import_module("galaxymorph.x"), as the package's lazy names use
    return {module for module in found if module.startswith("galaxymorph") and module != name}


MODULES = {module_name(path) for path in SOURCE.rglob("*.py")}
GRAPH = {module_name(path): imports_of(path) for path in SOURCE.rglob("*.py")}


def layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    return next(i for i, names in enumerate(LAYERS) if top in names)


def top_package(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_every_module_has_a_layer():
    for module in MODULES:
        layer(module)


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_run_down_the_layers(module):
    upward = [imported for imported in GRAPH[module]
              if top_package(imported) != top_package(module) and layer(imported) >= layer(module)]
    assert not upward, f"{module} imports {upward} from its own layer or above"


def test_no_import_circle():
    finished, path = set(), []

    def visit(module: str) -> None:
        if module in path:
            raise AssertionError("import circle: " + " -> ".join(path[path.index(module):] + [module]))
        if module in finished:
            return
        path.append(module)
        for imported in GRAPH.get(module, ()):
            if imported != "galaxymorph" and not module.startswith(f"{imported}."):  # a package's own __init__ runs first
                visit(imported)
        path.pop()
        finished.add(module)

    for module in sorted(GRAPH):
        visit(module)


def test_no_function_is_longer_than_80_lines():
    long = [f"{path.relative_to(SOURCE)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path in SOURCE.rglob("*.py") for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 80]
    assert not long, long


def test_the_command_line_uses_only_public_names():
    tree = ast.parse((SOURCE / "galaxymorph" / "cli.py").read_text())
    from_modules = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                    and (node.module or "").startswith("galaxymorph")]
    assert set(from_modules) == {"galaxymorph"}
    import galaxymorph

    used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name) and node.value.id == "galaxymorph"}
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module == "galaxymorph"
                for alias in node.names}
    assert used | imported <= set(galaxymorph.__all__), (used | imported) - set(galaxymorph.__all__)


def test_every_public_name_resolves_to_what_it_names_not_to_a_module():
    import types

    import galaxymorph

    for name in galaxymorph.__all__:
        assert not isinstance(getattr(galaxymorph, name), types.ModuleType), name


def test_the_public_names_are_the_eager_and_the_lazy_ones():
    import galaxymorph

    eager = {"BATCH_SIZE", "CALIBRATION_IMAGES", "CHUNK_ROWS", "DEFAULT_MODEL", "MAX_PIXELS", "SPLIT_SEED", "CatalogError",
             "GalaxyMorphError", "ImageReadError", "ModelError", "Preprocessing"}
    assert set(galaxymorph.__all__) == eager | set(galaxymorph._MODULE_OF)
