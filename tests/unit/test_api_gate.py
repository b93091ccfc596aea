"""Every Cloud Run API call goes through CloudRun._call (quota + retries), checked on the source itself.

A call that skips the gate is neither charged to the quota budget nor retried: the kind of bug that got
fixed one call site at a time elsewhere. This test fails the day someone adds one.
"""

from __future__ import annotations

import ast
import inspect

from controller import cloudrun

CLIENT_ATTRS = {"jobs", "executions", "tasks"}


def _client_calls(tree: ast.AST) -> list[ast.Call]:
    calls = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            # self.clients.<service>.<method>(...)
            if (
                isinstance(owner, ast.Attribute)
                and owner.attr in CLIENT_ATTRS
                and isinstance(owner.value, ast.Attribute)
                and owner.value.attr == "clients"
            ):
                calls.append(node)
    return calls


def test_every_client_call_is_inside_a_callable_given_to_the_gate() -> None:
    tree = ast.parse(inspect.getsource(cloudrun))
    parents: dict[ast.AST, ast.AST] = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    calls = _client_calls(tree)
    assert len(calls) >= 8, "the check must see the module's API calls"
    allowed = {"_call", "_lister", "_job_exists"}  # _job_exists only runs as an `ambiguous` probe of _call
    for call in calls:
        node: ast.AST = call
        enclosing = []
        while node in parents:
            node = parents[node]
            if isinstance(node, ast.FunctionDef | ast.Lambda):
                enclosing.append(node)
        # The call sits in a nested function or lambda (a thunk) ...
        assert enclosing and (
            isinstance(enclosing[0], ast.Lambda) or len(enclosing) >= 2 or enclosing[0].name in allowed
        ), f"line {call.lineno}: Cloud Run call outside a thunk"
        # ... and the method that owns it hands thunks to self._call (or is the lister/probe used by it).
        method = next(f for f in reversed(enclosing) if isinstance(f, ast.FunctionDef))
        source = ast.unparse(method)
        assert "self._call(" in source or method.name in allowed, f"{method.name} calls Cloud Run without _call"


def test_gapic_retries_are_disabled_so_ours_is_the_only_policy() -> None:
    for call in _client_calls(ast.parse(inspect.getsource(cloudrun))):
        keywords = {kw.arg: kw.value for kw in call.keywords}
        assert "retry" in keywords, f"line {call.lineno}: pass retry=None"
        assert isinstance(keywords["retry"], ast.Constant) and keywords["retry"].value is None
