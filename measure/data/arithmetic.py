"""Exact, safe arithmetic over dataset equations (no eval()).

Equations are parsed with `ast` into a small tree of numbers and + - * / ^ operations and
evaluated with `fractions.Fraction`, so "is this division exact" and "is this count still an
integer" are exact questions rather than float comparisons.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from fractions import Fraction

_OPERATOR_SYMBOLS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "^"}
_ASSIGNMENT = re.compile(r"^\s*([A-Za-z_]\w*)\s*=(.*)$", re.S)
# Exponents this large are never dataset quantities and would make Fraction arithmetic explode.
_MAX_EXPONENT = 64


class EquationError(ValueError):
    """The equation is not an arithmetic expression this module understands."""


@dataclass(frozen=True)
class Node:
    """One node of an equation tree: a number leaf (op is None) or a binary operation."""

    op: str | None
    value_text: str | None = None  # leaf only: the number as written in the equation
    left: Node | None = None
    right: Node | None = None

    @property
    def is_leaf(self) -> bool:
        return self.op is None

    def shape(self) -> str:
        """The operation structure with numbers erased, e.g. '((N+N)/N)'."""
        if self.is_leaf:
            return "N"
        return f"({self.left.shape()}{self.op}{self.right.shape()})"

    def leaves(self) -> list[Node]:
        if self.is_leaf:
            return [self]
        return self.left.leaves() + self.right.leaves()

    def subtrees(self) -> list[Node]:
        """All nodes, parents before children (pre-order)."""
        if self.is_leaf:
            return [self]
        return [self, *self.left.subtrees(), *self.right.subtrees()]

    def render(self) -> str:
        if self.is_leaf:
            return self.value_text
        return f"({self.left.render()}{self.op}{self.right.render()})"


def parse_number(text: str) -> Fraction:
    """Parse '12', '2.5', '1,000', '$3' into an exact Fraction; raise ValueError otherwise."""
    cleaned = text.strip().replace(",", "").lstrip("$")
    if not re.fullmatch(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?", cleaned):
        raise ValueError(f"not a number: {text!r}")
    return Fraction(cleaned)


def format_number(value: Fraction) -> str:
    """Canonical answer text: '12', '2.5', '0.333333' (integers without a trailing .0)."""
    if value.denominator == 1:
        return str(value.numerator)
    as_float = float(value)
    text = f"{as_float:.6f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


def parse_expression(text: str) -> Node:
    """Parse an infix expression such as '( 76.0 - 25.0 )' or '56*9^2' into a Node tree."""
    try:
        tree = ast.parse(text.replace("^", "**").strip(), mode="eval")
    except SyntaxError as error:
        raise EquationError(f"cannot parse {text!r}: {error.msg}") from None
    return _convert(tree.body, text)


def _convert(node: ast.AST, source: str) -> Node:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return Node(op=None, value_text=ast.get_source_segment(source.replace("^", "**"), node) or repr(node.value))
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATOR_SYMBOLS:
        return Node(
            op=_OPERATOR_SYMBOLS[type(node.op)],
            left=_convert(node.left, source),
            right=_convert(node.right, source),
        )
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        # Negative literals appear in a few equations; represent them as (0 - x).
        return Node(op="-", left=Node(op=None, value_text="0"), right=_convert(node.operand, source))
    raise EquationError(f"unsupported element {type(node).__name__} in {source!r}")


def evaluate(node: Node) -> Fraction:
    """Exact value of the tree; raises EquationError on division by zero or odd powers."""
    if node.is_leaf:
        return parse_number(node.value_text)
    left, right = evaluate(node.left), evaluate(node.right)
    if node.op == "+":
        return left + right
    if node.op == "-":
        return left - right
    if node.op == "*":
        return left * right
    if node.op == "/":
        if right == 0:
            raise EquationError("division by zero")
        return left / right
    if right.denominator != 1 or abs(right) > _MAX_EXPONENT:
        raise EquationError(f"unsupported exponent {right}")
    if left == 0 and right < 0:
        raise EquationError("zero to a negative power")
    return left ** int(right)


def node_values(node: Node) -> list[Fraction]:
    """Value of every node in pre-order (matches `Node.subtrees()`)."""
    return [evaluate(sub) for sub in node.subtrees()]


def split_assignment(equation: str) -> tuple[str | None, str]:
    """'x=56*9' -> ('x', '56*9'); a bare expression -> (None, expression).

    Raises EquationError for more than one '=' (e.g. MAWPS 603 'X=0.32=0.21').
    """
    if equation.count("=") > 1:
        raise EquationError(f"more than one '=' in {equation!r}")
    match = _ASSIGNMENT.match(equation)
    if match:
        return match.group(1), match.group(2)
    if "=" in equation:
        raise EquationError(f"left side of {equation!r} is not a variable")
    return None, equation


def is_nonnegative_integer(value: Fraction) -> bool:
    return value.denominator == 1 and value >= 0


def relative_difference(a: Fraction | float, b: Fraction | float) -> float:
    a, b = float(a), float(b)
    scale = max(abs(a), abs(b))
    return 0.0 if scale == 0 else abs(a - b) / scale
