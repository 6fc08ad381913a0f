"""Console views stay thin: every view function is at most 25 lines (reads live in writeback.selectors,
decisions in writeback.services)."""

import ast
from pathlib import Path

import console

MAX_LINES = 25
VIEWS = Path(console.__file__).parent / "views"


def view_functions() -> list[tuple[str, int]]:
    """(module:function, lines) of every public top-level function taking a request, decorators aside."""
    found = []
    for path in sorted(VIEWS.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or node.name.startswith("_"):
                continue
            if not node.args.args or node.args.args[0].arg != "request":
                continue
            first = node.body[0]
            # The docstring says what the view does; it is not logic.
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and len(node.body) > 1:
                first = node.body[1]
            lines = node.end_lineno - node.lineno + 1 - (first.lineno - node.body[0].lineno)
            found.append((f"{path.stem}:{node.name}", lines))
    return found


def test_every_console_view_is_at_most_25_lines():
    views = view_functions()
    assert len(views) > 30  # the walk finds the views (a broken walk must not pass)
    too_long = {name: lines for name, lines in views if lines > MAX_LINES}
    assert not too_long, f"views over {MAX_LINES} lines: {too_long}"


def test_the_walk_measures_a_long_function(tmp_path, monkeypatch):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    (tmp_path / "long.py").write_text(f"def long_view(request):\n{body}\n    return x0\n")
    monkeypatch.setattr("tests.console.test_view_size.VIEWS", tmp_path)
    assert view_functions() == [("long:long_view", MAX_LINES + 2)]
