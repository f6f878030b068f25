"""The layout docs/architecture.md describes, held by tests: imports point down, and each piece
of knowledge has one home. A change that breaks one of these says which rule it broke."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "handler"
TOOLS = ("handler.compiler", "handler.local", "handler.tune")


def modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        out[name] = ast.parse(path.read_text())
    return out


def imports(tree: ast.Module) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def test_the_runtime_never_imports_the_tools() -> None:
    """Only the CLI (lazily, inside commands) and the tools themselves reach the tools."""
    for name, tree in modules().items():
        if name.startswith(TOOLS) or name == "handler.cli":
            continue
        reached = {i for i in imports(tree) if i.startswith(TOOLS)}
        assert not reached, f"{name} imports {sorted(reached)}"


def test_the_adapters_never_import_upward() -> None:
    for name, tree in modules().items():
        if name.startswith(("handler.adapters", "handler.batch", "handler.inference")):
            upward = {i for i in imports(tree) if i in ("handler.entry", "handler.function")}
            assert not upward, f"{name} imports {sorted(upward)}"


def test_each_constant_is_defined_once() -> None:
    where = defaultdict(list)
    for name, tree in modules().items():
        for node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else []
            if isinstance(node, ast.AnnAssign):
                targets = [node.target]
            for target in targets:
                if isinstance(target, ast.Name) and target.id.isupper() and len(target.id) > 1:
                    where[target.id].append(name)
    twice = {const: mods for const, mods in where.items() if len(mods) > 1}
    assert not twice, f"defined in more than one module: {twice}"


def test_object_references_are_parsed_in_one_place() -> None:
    """Form-decoding of keys belongs to handler/batch/refs.py (notifications and EventBridge
    differ; two parsers could disagree)."""
    users = [n for n, tree in modules().items() if "urllib.parse.unquote_plus" in imports(tree)]
    assert users == ["handler.batch.refs"]


def test_batch_output_is_staged_in_one_place() -> None:
    users = [
        name
        for name, tree in modules().items()
        if name.startswith("handler.batch")
        and any(isinstance(n, ast.Attribute) and n.attr == "mkstemp" for n in ast.walk(tree))
    ]
    assert users == ["handler.batch.job"]
