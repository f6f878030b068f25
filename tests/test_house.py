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
        if name.startswith(TOOLS) or name in ("handler.cli", "handler.cli_args"):
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


COMPILER_MAX_LINES = 400  # one concept per file (docs/architecture.md, "The tools")
PACKAGE_MAX_LINES = 450


def test_no_module_is_a_grab_bag() -> None:
    too_long = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = len(path.read_text().splitlines())
        compiler = path.parent.name == "compiler"
        if lines > (COMPILER_MAX_LINES if compiler else PACKAGE_MAX_LINES):
            too_long[str(path.relative_to(ROOT))] = lines
    assert not too_long, f"split these modules: {too_long}"


def _indexes_a_graph(tree: ast.Module) -> list[int]:
    """Lines that build a producer map ({out: node for ... in node.output}) or a reader map
    (a loop over a node's inputs that appends the node): the graph index's job."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.DictComp) and any(
            isinstance(gen.iter, ast.Attribute) and gen.iter.attr == "output"
            for gen in node.generators
        ):
            found.append(node.lineno)
        if (
            isinstance(node, ast.For)
            and isinstance(node.iter, ast.Attribute)
            and node.iter.attr == "input"
            and isinstance(node.iter.value, ast.Name)
        ):
            owner = node.iter.value.id
            for call in ast.walk(node):
                if (
                    isinstance(call, ast.Call)
                    and isinstance(call.func, ast.Attribute)
                    and call.func.attr == "append"
                    and isinstance(call.func.value, ast.Subscript)
                    and any(isinstance(a, ast.Name) and a.id == owner for a in call.args)
                ):
                    found.append(node.lineno)
    return found


def test_the_graph_is_indexed_in_one_place() -> None:
    """Every compiler pass asks handler/compiler/graph.py's GraphIndex who produces and who
    reads a tensor; five private copies of that index had drifted apart."""
    copies = {
        name: lines
        for name, tree in modules().items()
        if name != "handler.compiler.graph" and (lines := _indexes_a_graph(tree))
    }
    assert not copies, f"use handler.compiler.graph.GraphIndex instead: {copies}"
    assert _indexes_a_graph(modules()["handler.compiler.graph"]), "the rule finds nothing"


def test_op_families_are_named_once() -> None:
    """Which ops are LayerNorms, GELUs or row-wise is handler/compiler/graph.py's to say."""
    sets: dict[str, list[int]] = {}
    for name, tree in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Set) and any(
                isinstance(e, ast.Constant) and e.value in ("LayerNormalization", "Gelu", "Erf")
                for e in node.elts
            ):
                sets.setdefault(name, []).append(node.lineno)
    assert set(sets) == {"handler.compiler.graph"}, sets


def test_targets_recipes_and_fidelity_live_in_one_module() -> None:
    """The CLI, the pipeline and the benches take targets, recipes and fidelity levels (their
    names, defaults and choices) from handler/compiler/targets.py; none spells one out."""
    from handler.compiler import targets

    tables = ("TARGETS", "ALIASES", "RECIPES", "FIDELITY", "DEFAULT_TARGET", "DEFAULT_FIDELITY")
    defined = {
        t.id
        for node in modules()["handler.compiler.targets"].body
        if isinstance(node, ast.Assign | ast.AnnAssign)
        for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(t, ast.Name)
    }
    assert set(tables) <= defined
    # The names no other module has a reason to spell ("arm64", "none" are words of their own).
    names = {n for n in targets.TARGETS if n.startswith("x86")} | set(targets.FIDELITY)
    names |= set(targets.RECIPES)
    spelled: dict[str, set[str]] = {}
    for name, tree in modules().items():
        if name == "handler.compiler.targets" or not name.startswith(("handler.cli", *TOOLS)):
            continue
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and node.value in names
            ):
                spelled.setdefault(name, set()).add(node.value)
    assert not spelled, f"take these from handler.compiler.targets: {spelled}"


def test_lambda_context_is_typed() -> None:
    """Handlers take Mangum's LambdaContext Protocol, never `context: Any`."""
    untyped = [
        f"{name}:{node.lineno}"
        for name, tree in modules().items()
        for node in ast.walk(tree)
        if isinstance(node, ast.arg)
        and node.arg == "context"
        and isinstance(node.annotation, ast.Name)
        and node.annotation.id == "Any"
    ]
    assert not untyped, untyped


def test_every_path_from_texts_to_answers_is_the_core_one() -> None:
    """The API, S3 batch, the warm-up and the build's gate all call Classifier.answer; none
    recomposes tokenise, infer and score itself (a change to postprocessing happens once)."""
    steps = {"infer", "infer_reading", "scores", "reading"}
    for name in (
        "handler.api.app",
        "handler.batch.job",
        "handler.function",
        "handler.compiler.gate",
    ):
        called = {
            node.func.attr
            for node in ast.walk(modules()[name])
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            # the emulated target's scores are another process's, computed by `answer` there
            and not (isinstance(node.func.value, ast.Name) and node.func.value.id == "on_target")
        }
        assert "answer" in called, f"{name} does not call Classifier.answer"
        assert not called & steps, f"{name} recomposes the core: {sorted(called & steps)}"
