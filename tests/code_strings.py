"""String constants of a module's code, for the tests that check no name is retyped."""

from __future__ import annotations

import ast


def code_strings(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, text) of every string constant that is code, not a docstring (f-string parts included)."""
    bodies = [node.body for node in ast.walk(tree) if isinstance(getattr(node, "body", None), list)]
    docs = {id(stmt.value) for body in bodies for stmt in body
            if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs]
