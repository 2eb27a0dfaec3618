"""Passes never import each other: what two pass families share belongs in the core (DESIGN.md).

A family is a top-level module ``passes/X.py`` or a package ``passes/X/``; modules inside one
package may import each other. Every import statement is checked, those inside functions too.
"""
import ast
from pathlib import Path

PASSES = Path(__file__).resolve().parents[2] / "passes"
PACKAGE = "onnxc.passes"


def _family_of_module(path: Path, root: Path) -> str | None:
    """The family ``path`` belongs to; None for ``passes/__init__.py``, which registers them all."""
    parts = path.relative_to(root).with_suffix("").parts
    return None if parts == ("__init__",) else parts[0]


def _imported_modules(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``, relative ones resolved."""
    # The package a module is in: onnxc.passes for passes/x.py, onnxc.passes.X for passes/X/*.py.
    package = [*PACKAGE.split("."), *path.relative_to(root).with_suffix("").parts[:-1]]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                module = ".".join([*package[: len(package) - node.level + 1], *([module] if module else [])])
            if module == PACKAGE:
                # ``from onnxc.passes import cleanup`` imports the module ``onnxc.passes.cleanup``.
                found.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names)
            else:
                found.append((node.lineno, module))
    return found


def _family_of_import(module: str) -> str | None:
    """The pass family an imported module belongs to, or None when it is not under ``onnxc.passes``."""
    parts = module.split(".")
    if parts[:2] != PACKAGE.split(".") or len(parts) < 3:
        return None
    return parts[2]


def cross_family_imports(root: Path = PASSES) -> list[str]:
    """Every import by a module of one pass family from another family, as ``file:line: ...``."""
    problems = []
    for path in sorted(root.rglob("*.py")):
        family = _family_of_module(path, root)
        if family is None:
            continue
        for line, module in _imported_modules(path, root):
            imported = _family_of_import(module)
            if imported is not None and imported != family:
                problems.append(f"{path.relative_to(root)}:{line}: imports {module} (family {imported})")
    return problems


def test_no_pass_family_imports_another():
    problems = cross_family_imports()
    assert problems == [], "move what pass families share into the core (onnxc.graph, ...):\n" + "\n".join(problems)


def test_the_check_finds_imports_across_families_but_not_within_one(tmp_path):
    (tmp_path / "__init__.py").write_text("from onnxc.passes import alpha, beta\n")
    (tmp_path / "alpha.py").write_text("from onnxc.passes.beta import helper\n")
    (tmp_path / "beta").mkdir()
    (tmp_path / "beta" / "__init__.py").write_text("from . import rules\n")
    (tmp_path / "beta" / "rules.py").write_text(
        "from onnxc.passes.beta.other import x\n\n\ndef late():\n    from .. import alpha\n")
    assert cross_family_imports(tmp_path) == [
        "alpha.py:1: imports onnxc.passes.beta (family beta)",
        "beta/rules.py:5: imports onnxc.passes.alpha (family alpha)",
    ]
