"""check_pair: every physical and textual constraint a pair must satisfy, as a list of violations.

Used by the generator (a candidate with violations is retried or rejected), by `measure data
check`, and by the tests. An empty list means the pair is valid.

A pair with a chain (A -> B -> C) is also checked on its link B -> C, which must pass every check
of a pair (`ProblemPair.chain_pair`), and C's answer must differ from A's and from B's, so that an
outcome tells the three apart. Those violations start with the chain field at fault,
"chain.<field>: ...", and speak of the link's problems as B and C.
"""

from __future__ import annotations

import re

from measure.data.arithmetic import (
    EquationError,
    Node,
    evaluate,
    is_nonnegative_integer,
    node_values,
    parse_expression,
    parse_number,
)
from measure.data.pairs import CHAIN_VARIATION_TYPES, KINDS, PAIR_ID_PATTERN, VARIATION_TYPES, ProblemPair
from measure.data.quantities import discrete_counts, number_tokens
from measure.data.updates import NOISE_LENGTH_FACTOR

ANSWER_TOLERANCE = 1e-6  # relative; canonical answer text keeps 6 decimals for non-terminating values


def check_pair(pair: ProblemPair) -> list[str]:
    violations = _check_common(pair)
    if pair.kind == "math":
        violations += _check_math(pair)
    elif pair.kind == "qa":
        violations += _check_qa(pair)
    if pair.chain is not None:
        violations += _check_chain(pair)
    return violations


# The link's own violations say A and B; in the chain's terms those are B and C.
_LINK_LABEL = re.compile(r"\b(?:([AB])(?='s\b|\b)|equation_([ab])\b)")
# Link violations that the chain's own answer checks state more plainly.
_LINK_ANSWER_REPEATS = ("answer did not change", "switched question has the same answer")
# (words in a link violation, the chain field at fault), first match wins.
_CHAIN_FIELDS = (
    (("noise", "repeat"), None),  # made by chain_pair itself, never the data's fault
    (("erratum",), "erratum"),
    (("restatement",), "restatement"),
    (("variation type", "single_number with", "multi_number with"), "variation_type"),
    (("answer list",), "answers_c"),
    (("does not evaluate to", "answer"), "answer_c"),
    (("equation", "quantity", "intermediate", "exact division", "counts discrete", "negative", "structure"),
     "equation_c"),
)


def _relabel(violation: str) -> str:
    def shift(match: re.Match) -> str:
        if match.group(1):
            return "B" if match.group(1) == "A" else "C"
        return "equation_b" if match.group(2) == "a" else "equation_c"
    return _LINK_LABEL.sub(shift, violation)


def _chain_field(violation: str) -> str | None:
    for words, field_name in _CHAIN_FIELDS:
        if any(word in violation for word in words):
            return field_name
    return "question_c"  # what is left is about C's text and its numbers


def _check_chain(pair: ProblemPair) -> list[str]:
    """The link B -> C passes every check of a pair, and C's answer is neither A's nor B's."""
    chain = pair.chain
    if pair.variation_type is None:
        return ["chain: an identical control (B = A) cannot have a chain"]
    wanted = ("question_switch",) if pair.kind == "qa" else ("single_number", "multi_number")
    if chain.variation_type not in CHAIN_VARIATION_TYPES or chain.variation_type not in wanted:
        return [f"chain.variation_type: {chain.variation_type!r} is not a {pair.kind} chain change "
                f"({' or '.join(wanted)})"]
    violations = []
    for violation in check_pair(pair.chain_pair()):
        field_name = _chain_field(violation)
        if field_name is not None and not any(repeat in violation for repeat in _LINK_ANSWER_REPEATS):
            violations.append(f"chain.{field_name}: {_relabel(violation)}")
    if chain.question_c in (pair.question_a, pair.question_b):
        violations.append(f"chain.question_c: C's text equals {'A' if chain.question_c == pair.question_a else 'B'}'s")
    for label, answers in (("A", pair.answers_a), ("B", pair.answers_b)):
        if same := _same_answers(pair.kind, chain.answers_c, answers):
            violations.append(f"chain.answer_c: C's answer {same} is also {label}'s; outcomes could not tell C from {label}")
    return violations


def _same_answers(kind: str, answers_c: tuple[str, ...], answers: tuple[str, ...]) -> str | None:
    """An answer of C that is also an answer of the other problem (math: equal as numbers)."""
    if kind != "math":
        shared = set(answers_c) & set(answers)
        return min(shared) if shared else None
    for answer in answers_c:
        try:
            value = parse_number(answer)
            if any(value == parse_number(other) for other in answers):
                return answer
        except ValueError:
            continue  # reported as a non-numeric answer by the link's checks
    return None


def _check_common(pair: ProblemPair) -> list[str]:
    violations = []
    if not PAIR_ID_PATTERN.match(pair.id):
        violations.append(f"id {pair.id!r} is not [A-Za-z0-9_]+")
    if pair.kind not in KINDS:
        violations.append(f"unknown kind {pair.kind!r}")
    if pair.variation_type not in VARIATION_TYPES:
        violations.append(f"unknown variation type {pair.variation_type!r}")
    if pair.answer_a not in pair.answers_a or pair.answer_b not in pair.answers_b:
        violations.append("canonical answer missing from its answer list")
    if pair.variation_type is None:
        if (pair.question_b, pair.answer_b, pair.equation_b) != (pair.question_a, pair.answer_a, pair.equation_a):
            violations.append("identical control but B differs from A")
    elif pair.question_b == pair.question_a:
        violations.append("B's text equals A's text but the pair is not a control")
    if pair.question_b not in pair.restatement:
        violations.append("restatement does not contain B")
    if pair.question_a not in pair.repeat:
        violations.append("repeat does not contain A")
    if not pair.erratum.strip():
        violations.append("erratum is empty")
    needed = NOISE_LENGTH_FACTOR * max(len(pair.erratum), len(pair.restatement))
    if len(pair.noise) < needed:
        violations.append(f"noise has {len(pair.noise)} characters, needs at least {needed:.0f}")
    if any(ch.isdigit() for ch in pair.noise):
        violations.append("noise contains digits")
    return violations


def _check_qa(pair: ProblemPair) -> list[str]:
    violations = []
    if pair.variation_type not in ("question_switch", None):
        violations.append(f"QA pair has math variation type {pair.variation_type!r}")
    if not pair.answers_a or not pair.answers_b:
        violations.append("QA pair without answers")
    if pair.variation_type == "question_switch" and set(pair.answers_a) & set(pair.answers_b):
        violations.append("switched question has the same answer")
    return violations


def _parse(equation: str | None, label: str, violations: list[str]) -> Node | None:
    if equation is None:
        violations.append(f"equation_{label} is missing")
        return None
    try:
        return parse_expression(equation)
    except EquationError as error:
        violations.append(f"equation_{label} does not parse: {error}")
        return None


def _answer_matches(node: Node, answer: str) -> bool:
    try:
        value, stated = evaluate(node), parse_number(answer)
    except (EquationError, ValueError):
        return False
    if value == stated:
        return True
    return abs(float(value - stated)) <= ANSWER_TOLERANCE * max(1.0, abs(float(value)))


def _check_math(pair: ProblemPair) -> list[str]:
    violations: list[str] = []
    if pair.variation_type == "question_switch":
        violations.append("math pair with QA variation type 'question_switch'")
    tree_a, tree_b = _parse(pair.equation_a, "a", violations), _parse(pair.equation_b, "b", violations)
    if tree_a is None or tree_b is None:
        return violations
    for tree, answer, label in ((tree_a, pair.answer_a, "A"), (tree_b, pair.answer_b, "B")):
        if not _answer_matches(tree, answer):
            violations.append(f"{label}'s equation does not evaluate to {label}'s answer {answer}")
    if pair.variation_type is None:
        return violations
    try:
        if parse_number(pair.answer_a) == parse_number(pair.answer_b):
            violations.append("answer did not change")
    except ValueError:
        violations.append("non-numeric answer")
        return violations
    violations += _check_quantities_stay_physical(tree_a, tree_b, pair.variation_type, pair.question_a)
    violations += _check_changed_numbers(pair)
    if pair.variation_type in ("single_number", "multi_number"):
        violations += _check_equation_follows_text(tree_a, tree_b, pair)
    return violations


def _check_equation_follows_text(tree_a: Node, tree_b: Node, pair: ProblemPair) -> list[str]:
    """Every leaf that changed in the equation changed the same way in the text."""
    if tree_a.shape() != tree_b.shape():
        return []  # reported by the structure check
    text_changes = {parse_number(old): parse_number(new)
                    for old, new in (_differing_numbers(pair.question_a, pair.question_b) or [])}
    violations = []
    for leaf_a, leaf_b in zip(tree_a.leaves(), tree_b.leaves()):
        old, new = parse_number(leaf_a.value_text), parse_number(leaf_b.value_text)
        if old != new and text_changes.get(old) != new:
            violations.append(f"equation changes {leaf_a.value_text} to {leaf_b.value_text} but the text does not")
    return violations


def _corresponding_subtree(tree_a: Node, tree_b: Node, variation_type: str) -> Node | None:
    """The part of B that plays A's role: B itself, or for added_step the operand extended."""
    if variation_type != "added_step":
        return tree_b if tree_b.shape() == tree_a.shape() else None
    if tree_b.is_leaf:
        return None
    for child in (tree_b.left, tree_b.right):
        if child.shape() == tree_a.shape():
            return child
    return None


def _check_quantities_stay_physical(tree_a: Node, tree_b: Node, variation_type: str, question_a: str) -> list[str]:
    """Counts stay non-negative integers, exact divisions stay exact, non-negatives stay so.

    A count is a whole value of A that is built from whole numbers only, or that counts discrete
    things by what A's text says (:func:`measure.data.quantities.discrete_counts`: 0.5 of 8 pets
    are 4 cats, so 0.3 of 8 pets is rejected).
    """
    violations = []
    part_b = _corresponding_subtree(tree_a, tree_b, variation_type)
    if part_b is None:
        return [f"B's equation {tree_b.render()} does not keep A's structure {tree_a.shape()}"]
    try:
        values_a, values_b = node_values(tree_a), node_values(part_b)
        extended_b = evaluate(tree_b)
    except EquationError as error:
        return [f"equation cannot be evaluated: {error}"]
    nodes_a = tree_a.subtrees()
    things = discrete_counts(question_a, tree_a)
    for node, value_a, value_b, counts_things in zip(nodes_a, values_a, values_b, things):
        where = "quantity" if node.is_leaf else f"intermediate {node.render()}"
        # Counts built from counts must stay whole; other values only when they count things:
        # 2.5 + 3.5 = 6 is whole by coincidence, 0.5 of 8 pets is a number of pets.
        whole_arithmetic = is_nonnegative_integer(value_a) and all(
            parse_number(leaf.value_text).denominator == 1 for leaf in node.leaves())
        if whole_arithmetic and not is_nonnegative_integer(value_b):
            kind = "exact division" if node.op == "/" else "non-negative integer"
            violations.append(f"{where} was a {kind} ({value_a}) in A, is {float(value_b):g} in B")
        elif counts_things and not is_nonnegative_integer(value_b):
            violations.append(f"{where} counts discrete things ({value_a} in A), is {float(value_b):g} in B")
        elif value_a >= 0 > value_b:
            violations.append(f"{where} became negative ({float(value_b):g})")
    if variation_type == "added_step":
        answer_a = values_a[0]
        if is_nonnegative_integer(answer_a) and not is_nonnegative_integer(extended_b):
            violations.append(f"added step turns integer answer {answer_a} into {float(extended_b):g}")
        elif answer_a >= 0 > extended_b:
            violations.append("added step makes the answer negative")
    return violations


def _differing_numbers(text_a: str, text_b: str) -> list[tuple[str, str]] | None:
    """Positional differences between the number tokens of A and B; None if counts differ."""
    tokens_a, tokens_b = number_tokens(text_a), number_tokens(text_b)
    if len(tokens_a) != len(tokens_b):
        return None
    return [(a.text, b.text) for a, b in zip(tokens_a, tokens_b) if a.text != b.text]


def _outside_numbers(text: str) -> str:
    return "".join(_split_around_numbers(text))


def _split_around_numbers(text: str) -> list[str]:
    pieces, last = [], 0
    for token in number_tokens(text):
        pieces.append(text[last:token.start])
        last = token.end
    pieces.append(text[last:])
    return pieces


def _check_changed_numbers(pair: ProblemPair) -> list[str]:
    """Changed numbers occur in B as whole tokens, and nothing but them changed in the text."""
    violations = []
    changes = pair.metadata.get("changes")
    b_numbers = {token.text for token in number_tokens(pair.question_b)}
    a_numbers = {token.text for token in number_tokens(pair.question_a)}
    if pair.variation_type in ("single_number", "multi_number"):
        differing = _differing_numbers(pair.question_a, pair.question_b)
        if differing is None or _outside_numbers(pair.question_a) != _outside_numbers(pair.question_b):
            return ["B's text differs from A's in more than its numbers (or a number was split or merged)"]
        if changes is None:
            changes = [{"old": old, "new": new} for old, new in differing]
        expected = sorted((change["old"], change["new"]) for change in changes)
        if sorted(differing) != expected:
            violations.append(f"numbers changed in the text {differing} are not the declared changes {expected}")
        wanted = 1 if pair.variation_type == "single_number" else 2
        if (len(changes) != 1) if wanted == 1 else (len(changes) < 2):
            violations.append(f"{pair.variation_type} with {len(changes)} changed numbers")
        for change in changes:
            if change["new"] not in b_numbers:
                violations.append(f"changed number {change['new']} does not occur in B's text")
            if change["old"] in b_numbers:
                violations.append(f"old number {change['old']} still occurs in B's text")
            if change["new"] not in pair.erratum:
                violations.append(f"erratum does not name the new number {change['new']}")
    elif pair.variation_type == "added_step":
        if not pair.question_b.startswith(pair.question_a):
            violations.append("added_step B does not extend A's text")
        step = pair.metadata.get("step_number")
        new_numbers = b_numbers - a_numbers if step is None else {step}
        if not new_numbers or not new_numbers <= b_numbers:
            violations.append("the added step's number does not occur in B's text")
        elif not any(number in pair.erratum for number in new_numbers):
            violations.append("erratum does not name the added step's number")
    return violations

