"""Numbers in problem text: finding them as whole tokens, linking them to equation leaves,
writing replacement values in the same style (commas, decimals) as the original, and telling
which values of an equation count discrete things (:func:`discrete_counts`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from measure.data.arithmetic import EquationError, Node, evaluate, parse_number

# A whole number token: not preceded by a word character or '.', not followed by a word
# character or a further decimal part, so '56' never matches inside '156', '5.6' or 'x56'.
NUMBER_TOKEN = re.compile(r"(?<![\w.])\d+(?:,\d{3})*(?:\.\d+)?(?![\w]|\.\d)")
_UNIT_WORD = re.compile(r"\s*([A-Za-z]+)")
_NOT_UNITS = frozenset((
    "and", "or", "the", "a", "an", "in", "on", "at", "to", "for", "with", "is", "are", "was",
    "were", "of", "from", "by", "than", "if", "he", "she", "they", "it", "each", "per", "times",
))
#: Units of continuous measures (time, length, mass, volume, area, money, temperature, energy) and
#: words of ratio: a number of them may be fractional. Any other noun after a number, or asked for
#: by "how many", names discrete things (apples, pets, students), whose numbers are whole.
MEASURE_UNITS = frozenset((
    "second", "sec", "minute", "min", "hour", "hr", "day", "week", "month", "year", "decade",
    "inch", "foot", "feet", "yard", "mile", "meter", "metre", "m", "cm", "mm", "km", "kilometer",
    "kilometre", "centimeter", "centimetre", "millimeter", "millimetre", "pound", "lb", "lbs",
    "ounce", "oz", "gram", "g", "kg", "kilogram", "milligram", "mg", "ton", "tonne", "gallon",
    "quart", "pint", "cup", "liter", "litre", "l", "ml", "milliliter", "millilitre", "teaspoon",
    "tablespoon", "tsp", "tbsp", "acre", "hectare", "square", "cubic", "dollar", "cent", "euro",
    "buck", "degree", "calorie", "mph", "kph", "dozen", "percent", "times",
))
# Words after a number that name no thing ("5 more", "3 times"): the number's unit is unknown.
_NOT_NOUNS = frozenset(("more", "fewer", "less", "extra", "additional", "times", "percent"))
_HOW_MANY = re.compile(r"\bhow\s+many\s+(?:(?:more|fewer|less|total|additional|extra)\s+)?([A-Za-z]+)",
                       re.IGNORECASE)


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


def is_measure_unit(word: str) -> bool:
    """'pounds', 'inches', 'feet', 'hours' yes; 'apples', 'pets' no (plural -s/-es ignored)."""
    word = word.lower()
    return any(form in MEASURE_UNITS for form in (word, word[:-1] if word.endswith("s") else "",
                                                  word[:-2] if word.endswith("es") else ""))


def asks_for_a_count(question: str) -> bool:
    """Does the question ask "how many" of discrete things? ('How many apples ...', 'How many are
    cats?' yes; 'How many pounds ...', 'How many times ...', 'How far ...' no.) The last "how
    many" of the text decides: that is the question asked."""
    found = _HOW_MANY.findall(question)
    return bool(found) and not is_measure_unit(found[-1])


def discrete_counts(question: str, tree: Node) -> list[bool]:
    """For every node of ``tree`` (``Node.subtrees()`` order): does its value count discrete things?

    A node counts discrete things when its value is a whole number >= 0 and
    - it is a leaf whose number is written in the question before a noun that names things, not a
      unit of measure ('8 pets' yes; '20 pounds', '$5', '5 more' no);
    - or it is the whole equation and the question asks "how many" of things
      ('How many are cats?' counts; 'How many pounds ...' does not);
    - or it sums or subtracts two counts, multiplies two counts or a count and a pure number
      ('0.5 of 8 pets', '3 times'), or divides a count by a count or a pure number. A pure number
      is written in the question with no unit and no '$' ('0.5 of', '50%'), or not written there at
      all (a constant of the equation, such as 100 for a percentage).

    Such a value must stay whole when the problem's numbers change: 0.3 of 8 pets is no number of
    cats. Values that are whole by the arithmetic of whole numbers alone are checked separately
    (measure.data.constraints).
    """
    tokens = number_tokens(question)

    def written(leaf: Node) -> list[NumberToken]:
        value = parse_number(leaf.value_text)
        return [token for token in tokens if token.value == value]

    def names_things(token: NumberToken) -> bool:
        unit = unit_after(question, token)
        return bool(unit) and unit.lower() not in _NOT_NOUNS and not is_measure_unit(unit)

    def pure(node: Node) -> bool:
        if not node.is_leaf:
            return all(pure(leaf) for leaf in node.leaves())
        found = written(node)
        return all(not question[:t.start].rstrip().endswith("$")
                   and unit_after(question, t).lower() in ("", "times", "percent") for t in found)

    def counts(node: Node, is_root: bool) -> bool:
        try:
            value = evaluate(node)
        except EquationError:
            return False
        if value.denominator != 1 or value < 0:
            return False
        if is_root and asks_for_a_count(question):
            return True
        if node.is_leaf:
            found = written(node)
            return bool(found) and all(names_things(token) for token in found)
        left, right = counts(node.left, False), counts(node.right, False)
        if node.op in "+-":
            return left and right
        if node.op == "*":
            return (left and (right or pure(node.right))) or (right and pure(node.left))
        if node.op == "/":
            return left and (right or pure(node.right))
        return False

    return [counts(node, node is tree) for node in tree.subtrees()]


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
