"""Rebuild one infix equation for a GSM8K problem from its calculator annotations.

GSM8K solutions annotate each step as <<expr=value>>. A later step that uses an earlier
step's value gets that step's expression substituted in, so the last step's expression becomes
one equation over the question's numbers (and constants such as 60 or 2 the solution brought in).
A value that equals both an earlier result and a number in the question is ambiguous: the
equation is then not rebuilt, because changing that number in the text would not be reflected.
"""

from __future__ import annotations

import re
from fractions import Fraction

from measure.data.arithmetic import EquationError, Node, evaluate, parse_expression, parse_number

_ANNOTATION = re.compile(r"<<([^<>=]*)=([^<>]*)>>")
_TEXT_NUMBER = re.compile(r"(?<![\w.])\d+(?:,\d{3})*(?:\.\d+)?(?![\w]|\.\d)")


def _substitute(node: Node, results: dict[Fraction, Node]) -> Node:
    if node.is_leaf:
        return results.get(parse_number(node.value_text), node)
    return Node(op=node.op, left=_substitute(node.left, results), right=_substitute(node.right, results))


def rebuild_equation(solution: str, answer: Fraction, question: str) -> tuple[str | None, str | None]:
    """(equation, None) on success, else (None, reason)."""
    question_numbers = {parse_number(match.group()) for match in _TEXT_NUMBER.finditer(question)}
    results: dict[Fraction, Node] = {}
    final: Node | None = None
    for expression, value_text in _ANNOTATION.findall(solution):
        try:
            node = parse_expression(expression)
            value = evaluate(node)
            stated = parse_number(value_text)
        except (EquationError, ValueError):
            return None, "unparsable_annotation"
        if value != stated and abs(float(value - stated)) > 0.01 * max(abs(float(stated)), 1e-9):
            return None, "annotation_mismatch"
        for leaf in node.leaves():
            leaf_value = parse_number(leaf.value_text)
            if leaf_value in results and leaf_value in question_numbers:
                return None, "ambiguous_equation"
        node = _substitute(node, results)
        results.setdefault(value, node)
        if value == answer:
            final = node
    if final is None:
        return None, "no_equation_for_answer"
    return final.render(), None
