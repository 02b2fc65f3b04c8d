"""Numbers in problem text: finding them as whole tokens, linking them to equation leaves,
and writing replacement values in the same style (commas, decimals) as the original."""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from measure.data.arithmetic import Node, parse_number

# A whole number token: not preceded by a word character or '.', not followed by a word
# character or a further decimal part, so '56' never matches inside '156', '5.6' or 'x56'.
NUMBER_TOKEN = re.compile(r"(?<![\w.])\d+(?:,\d{3})*(?:\.\d+)?(?![\w]|\.\d)")
_UNIT_WORD = re.compile(r"\s*([A-Za-z]+)")
_NOT_UNITS = frozenset(
    "and or the a an in on at to for with is are was were of from by than if he she they it "
    "each per times".split()
)


@dataclass(frozen=True)
class NumberToken:
    text: str
    start: int
    end: int

    @property
    def value(self) -> Fraction:
        return parse_number(self.text)


@dataclass(frozen=True)
class Quantity:
    """A number that occurs once in the text and is used by the equation (leaf positions)."""

    token: NumberToken
    leaf_positions: tuple[int, ...]
    unit: str
    prefix: str = ""  # "$" when the text writes the number as money

    @property
    def value(self) -> Fraction:
        return self.token.value


def number_tokens(text: str) -> list[NumberToken]:
    return [NumberToken(m.group(), m.start(), m.end()) for m in NUMBER_TOKEN.finditer(text)]


def unit_after(text: str, token: NumberToken) -> str:
    """The word naming what the number counts ('56 books' -> 'books'), or '' if none fits."""
    if text[:token.start].rstrip().endswith("$"):
        return ""
    match = _UNIT_WORD.match(text, token.end)
    if match and match.group(1).lower() not in _NOT_UNITS:
        return match.group(1)
    return ""


def changeable_quantities(text: str, tree: Node) -> list[Quantity]:
    """Numbers that appear exactly once in the text and at least once among the equation leaves.

    A value written twice in the text is skipped: changing one occurrence would leave it
    unclear which one the equation meant.
    """
    tokens = number_tokens(text)
    leaf_values = [parse_number(leaf.value_text) for leaf in tree.leaves()]
    quantities = []
    for token in tokens:
        if sum(1 for other in tokens if other.value == token.value) != 1:
            continue
        positions = tuple(i for i, value in enumerate(leaf_values) if value == token.value)
        if positions and token.value > 0:
            prefix = "$" if text[:token.start].rstrip().endswith("$") else ""
            quantities.append(Quantity(token, positions, unit_after(text, token), prefix))
    return quantities


def decimals_of(text: str) -> int:
    return len(text.split(".")[1]) if "." in text else 0


def format_like(value: Fraction, original_text: str) -> str:
    """Write value in the style of original_text: same decimal places, commas if it had them."""
    places = decimals_of(original_text)
    if places == 0:
        assert value.denominator == 1, "integer style needs an integer value"
        return f"{value.numerator:,}" if "," in original_text else str(value.numerator)
    scaled = value * 10**places
    assert scaled.denominator == 1, "value has more decimal places than the original style"
    whole, fraction = divmod(scaled.numerator, 10**places)
    whole_text = f"{whole:,}" if "," in original_text else str(whole)
    return f"{whole_text}.{str(fraction).zfill(places)}"


def replace_tokens(text: str, replacements: dict[NumberToken, str]) -> str:
    """Replace the given whole tokens by span (right to left, so spans stay valid)."""
    for token in sorted(replacements, key=lambda t: t.start, reverse=True):
        text = text[:token.start] + replacements[token] + text[token.end:]
    return text


def replace_leaves(tree: Node, new_texts: dict[int, str]) -> Node:
    """A copy of tree whose leaves at the given positions (in leaves() order) get new text."""
    counter = iter(range(len(tree.leaves())))

    def rebuild(node: Node) -> Node:
        if node.is_leaf:
            position = next(counter)
            return Node(op=None, value_text=new_texts.get(position, node.value_text))
        left = rebuild(node.left)
        return Node(op=node.op, left=left, right=rebuild(node.right))

    return rebuild(tree)
