"""Augmentation generator: turns math word problems (numeric answer + equation) into pairs.

Variation types: single_number (one quantity changed), multi_number (several), added_step
(a sentence adding one operation on the answer), and identical controls (None, B == A).
Every produced pair passes `check_pair`; a candidate that violates a constraint is redrawn a
few times, then the problem is rejected with a reason. Everything is deterministic by seed.

Chains (`chain=True`, `add_chain`): a single_number or multi_number pair can grow a third problem C,
made from B as B was made from A (the same number of quantities changed again, under the same
constraints, never back to one of A's numbers) so that A, B and C have three different answers. The
chain is drawn from its own seeded stream, so asking for chains leaves every A -> B draw as it was;
a pair whose chain cannot be made keeps chain None.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction

from measure.data.arithmetic import (
    EquationError,
    Node,
    evaluate,
    format_number,
    parse_expression,
)
from measure.data.constraints import check_pair
from measure.data.items import SourceItem
from measure.data.pairs import ChainStep, ProblemPair
from measure.data.quantities import (
    Quantity,
    changeable_quantities,
    decimals_of,
    format_like,
    number_tokens,
    replace_leaves,
    replace_tokens,
)
from measure.data.updates import (
    CONTROL_ERRATUM,
    NumberChange,
    added_step_erratum,
    build_update_texts,
    number_change_erratum,
    restatement,
    stable_rng,
)

MATH_VARIATION_TYPES = ("single_number", "multi_number", "added_step", None)
# Pair types the generator gives a chain (C changes B's numbers again, as B changed A's).
CHAINED_VARIATION_TYPES = ("single_number", "multi_number")
DEFAULT_MIX = {"single_number": 0.25, "multi_number": 0.25, "added_step": 0.25, None: 0.25}
ATTEMPTS_PER_PROBLEM = 48
# Exact decimal answers only: a B answer must be writable with at most this many decimals.
MAX_ANSWER_DECIMALS = 4

# (operation, sentence appended to A, instruction named in the erratum). Several phrasings
# per operation so models do not see one fixed template.
STEP_PHRASINGS = {
    "+": (("Then add {n} to that answer. What is the final result?", "add {n} to the answer"),
          ("Now suppose the answer increases by {n}. What is the new answer?", "the answer increases by {n}")),
    "-": (("Then subtract {n} from that answer. What is the final result?", "subtract {n} from the answer"),
          ("Now suppose the answer decreases by {n}. What is the new answer?", "the answer decreases by {n}")),
    "*": (("Then multiply that answer by {n}. What is the final result?", "multiply the answer by {n}"),
          ("Now suppose the answer becomes {n} times as large. What is the new answer?",
           "the answer becomes {n} times as large")),
    "/": (("Then divide that answer by {n}. What is the final result?", "divide the answer by {n}"),
          ("Now suppose the answer is split into {n} equal parts. How big is each part?",
           "the answer is split into {n} equal parts")),
}


UNUSABLE_PROBLEM_REASONS = frozenset({"no_equation", "unparsable_equation", "answer_not_exactly_equation",
                                      "negative_answer"})


class Rejected(Exception):
    """This problem cannot give a valid pair of the requested type; the message is the reason."""


@dataclass
class AugmentReport:
    produced: Counter = field(default_factory=Counter)         # variation type -> pairs
    rejected: dict[str, list[str]] = field(default_factory=dict)  # reason -> source record ids
    requested: int = 0
    chains: int | None = None  # pairs given a chain A -> B -> C; None when chains were not asked for

    def reject(self, reason: str, record_id: str) -> None:
        self.rejected.setdefault(reason, []).append(record_id)

    @property
    def rejected_counts(self) -> Counter:
        return Counter({reason: len(ids) for reason, ids in self.rejected.items()})

    def summary_lines(self) -> list[str]:
        lines = [f"pairs: {sum(self.produced.values())} of {self.requested} requested"]
        for variation_type in MATH_VARIATION_TYPES:
            lines.append(f"  {variation_type or 'control'}: {self.produced.get(variation_type, 0)}")
        if self.chains is not None:
            can_chain = sum(self.produced.get(t, 0) for t in CHAINED_VARIATION_TYPES)
            lines.append(f"chains (A -> B -> C): {self.chains} of {can_chain} single/multi_number pairs")
        lines.append(f"rejected source problems: {sum(self.rejected_counts.values())}")
        for reason, count in self.rejected_counts.most_common():
            lines.append(f"  {reason}: {count}")
        return lines


def parse_mix(text: str) -> dict[str | None, float]:
    """'single_number=1,added_step=1,control=2' -> weights normalised to sum to 1."""
    weights: dict[str | None, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, weight = part.partition("=")
        key = None if name.strip() in ("control", "null", "none", "None") else name.strip()
        if key not in MATH_VARIATION_TYPES:
            raise ValueError(f"unknown variation type {name!r} in mix")
        weights[key] = float(weight)
    total = sum(weights.values())
    if total <= 0 or any(w < 0 for w in weights.values()):
        raise ValueError(f"mix weights must be non-negative and not all zero: {text!r}")
    return {key: weight / total for key, weight in weights.items()}


def quotas(n: int, mix: dict[str | None, float]) -> dict[str | None, int]:
    """Split n by the mix with largest remainders, ties broken in MATH_VARIATION_TYPES order."""
    exact = {key: n * mix.get(key, 0.0) for key in MATH_VARIATION_TYPES}
    counts = {key: int(value) for key, value in exact.items()}
    order = sorted(MATH_VARIATION_TYPES, key=lambda k: (-(exact[k] - counts[k]), MATH_VARIATION_TYPES.index(k)))
    for key in order[: n - sum(counts.values())]:
        counts[key] += 1
    return counts


def _valid_problem(record: SourceItem) -> Node:
    """A's equation tree, if A can be augmented at all; raise Rejected otherwise."""
    if record.equation is None:
        raise Rejected("no_equation")
    try:
        tree = parse_expression(record.equation)
        value = evaluate(tree)
    except EquationError:
        raise Rejected("unparsable_equation") from None
    if format_number(value) != record.answer:
        raise Rejected("answer_not_exactly_equation")
    if value < 0:
        raise Rejected("negative_answer")
    return tree


def _answer_is_writable(value: Fraction) -> bool:
    return (value * 10**MAX_ANSWER_DECIMALS).denominator == 1


def _new_value(quantity: Quantity, rng: random.Random, taken: set[Fraction]) -> Fraction | None:
    """A different positive value in the quantity's style, not equal to any number in the text."""
    places = decimals_of(quantity.token.text)
    step = Fraction(1, 10**places)
    units = quantity.value / step
    spread = max(3, int(units) // 2)
    for _ in range(8):
        candidate = (units + rng.choice([-1, 1]) * rng.randint(1, spread)) * step
        # Keep the look of the original: decimals stay fractional, plurals (>= 2) stay plural.
        looks_alike = (candidate.denominator != 1) if places else (candidate >= 2 or quantity.value < 2)
        if candidate > 0 and candidate not in taken and looks_alike:
            return candidate
    return None


def _change_numbers(record: SourceItem, tree: Node, how_many: int, rng: random.Random,
                    avoid: frozenset[Fraction] = frozenset()):
    """New values for one (or at least two) quantities, none equal to a number of the text or `avoid`."""
    quantities = changeable_quantities(record.question, tree)
    if len(quantities) < how_many:
        raise Rejected("no_changeable_number" if how_many == 1 else "fewer_than_two_changeable_numbers")
    count = how_many if how_many == 1 else rng.randint(2, len(quantities))
    chosen = sorted(rng.sample(quantities, count), key=lambda q: q.token.start)
    taken = {token.value for token in number_tokens(record.question)} | avoid
    text_replacements, leaf_replacements, changes = {}, {}, []
    for quantity in chosen:
        value = _new_value(quantity, rng, taken)
        if value is None:
            return None
        taken.add(value)
        new_text = format_like(value, quantity.token.text)
        text_replacements[quantity.token] = new_text
        leaf_replacements.update({position: new_text.replace(",", "") for position in quantity.leaf_positions})
        changes.append(NumberChange(quantity.token.text, new_text, quantity.unit, quantity.prefix))
    question_b = replace_tokens(record.question, text_replacements)
    tree_b = replace_leaves(tree, leaf_replacements)
    metadata = {"changes": [{"old": c.old_text, "new": c.new_text, "unit": c.unit, "prefix": c.prefix}
                            for c in changes]}
    return question_b, tree_b, number_change_erratum(changes), metadata


def _add_step(record: SourceItem, tree: Node, rng: random.Random):
    answer = evaluate(tree)
    taken = {token.value for token in number_tokens(record.question)}
    operation = rng.choice(sorted(STEP_PHRASINGS))
    if operation == "+":
        number = rng.randint(1, max(9, int(answer) // 2))
    elif operation == "-":
        if answer < 2:
            return None
        number = rng.randint(1, max(1, int(answer) - 1))
    elif operation == "*":
        number = rng.randint(2, 5)
    else:
        divisors = [d for d in range(2, 13) if answer.denominator == 1 and answer.numerator % d == 0]
        if not divisors:
            return None
        number = rng.choice(divisors)
    if number in taken:
        return None
    sentence, instruction = rng.choice(STEP_PHRASINGS[operation])
    question_b = f"{record.question} {sentence.format(n=number)}"
    tree_b = Node(op=operation, left=tree, right=Node(op=None, value_text=str(number)))
    erratum = added_step_erratum(instruction.format(n=number) + ".")
    return question_b, tree_b, erratum, {"step_op": operation, "step_number": str(number)}


def _make_pair(record: SourceItem, tree: Node, variation_type: str | None, seed: int,
               candidate) -> ProblemPair:
    question_b, tree_b, erratum, extra = candidate
    answer_a = record.answer
    answer_b = format_number(evaluate(tree_b))
    texts = build_update_texts(record.question, question_b, erratum, record.id, seed)
    return ProblemPair(
        id=record.id, source=record.source, kind="math", variation_type=variation_type,
        question_a=record.question, question_b=question_b,
        answer_a=answer_a, answer_b=answer_b, answers_a=(answer_a,), answers_b=(answer_b,),
        equation_a=tree.render(), equation_b=tree_b.render(), context=None,
        erratum=texts.erratum, restatement=texts.restatement, repeat=texts.repeat, noise=texts.noise,
        metadata={"source_id": record.id, "seed": seed, "source_equation": record.equation, **extra},
    )


def add_chain(pair: ProblemPair, seed: int = 0) -> ProblemPair:
    """The pair with a chain B -> C (C changes B's numbers again), or the pair unchanged if none can be made.

    C changes as many quantities of B as B changed of A (single_number: one, multi_number: two or
    more), each to a value that is none of B's or A's numbers; the result passes check_pair on both
    links, with C's answer different from A's and B's. Any other pair (added_step, control, qa, one
    without B's equation) is returned unchanged.
    """
    if pair.kind != "math" or pair.variation_type not in CHAINED_VARIATION_TYPES or pair.equation_b is None:
        return pair
    try:
        tree_b = parse_expression(pair.equation_b)
    except EquationError:
        return pair
    record_b = SourceItem(id=pair.id, source=pair.source, question=pair.question_b, answer=pair.answer_b,
                            equation=pair.equation_b)
    avoid = frozenset(token.value for token in number_tokens(pair.question_a))
    how_many = 1 if pair.variation_type == "single_number" else 2
    rng = stable_rng("chain", seed, pair.id, pair.variation_type)
    for _ in range(ATTEMPTS_PER_PROBLEM):
        try:
            candidate = _change_numbers(record_b, tree_b, how_many, rng, avoid)
        except Rejected:
            return pair  # B has too few quantities that may change
        if candidate is None:
            continue
        question_c, tree_c, erratum, metadata = candidate
        try:
            answer_c = evaluate(tree_c)
        except EquationError:
            continue
        if not _answer_is_writable(answer_c):
            continue
        answer_text = format_number(answer_c)
        chain = ChainStep(question_c=question_c, answer_c=answer_text, answers_c=(answer_text,),
                          equation_c=tree_c.render(), variation_type=pair.variation_type, erratum=erratum,
                          restatement=restatement(question_c), metadata={**metadata, "seed": seed})
        chained = replace(pair, chain=chain)
        if not check_pair(chained):
            return chained
    return pair


def augment_problem(record: SourceItem, variation_type: str | None, seed: int = 0,
                    chain: bool = False) -> ProblemPair:
    """One valid pair of the given type from one problem, or Rejected with the reason.

    With chain, a single_number or multi_number pair also gets a chain A -> B -> C where one can be
    made (`add_chain`); the pair A -> B is the same as without.
    """
    pair = _augment(record, variation_type, seed)
    return add_chain(pair, seed) if chain else pair


def _augment(record: SourceItem, variation_type: str | None, seed: int) -> ProblemPair:
    tree = _valid_problem(record)
    if variation_type is None:
        return _make_pair(record, tree, None, seed, (record.question, tree, CONTROL_ERRATUM, {}))
    rng = stable_rng("augment", seed, record.id, variation_type)
    for _ in range(ATTEMPTS_PER_PROBLEM):
        last_violation = "constraints_unsatisfiable"
        if variation_type == "added_step":
            candidate = _add_step(record, tree, rng)
        else:
            candidate = _change_numbers(record, tree, 1 if variation_type == "single_number" else 2, rng)
        if candidate is None:
            continue
        try:
            answer_b = evaluate(candidate[1])
        except EquationError:
            continue
        if not _answer_is_writable(answer_b):
            last_violation = "answer_not_exact_decimal"
            continue
        pair = _make_pair(record, tree, variation_type, seed, candidate)
        if not check_pair(pair):
            return pair
    raise Rejected(last_violation)


def generate_pairs(records: Sequence[SourceItem], n: int, seed: int = 0,
                   mix: dict[str | None, float] | None = None,
                   chains: bool = False) -> tuple[list[ProblemPair], AugmentReport]:
    """Up to n pairs split by mix (default 25/25/25/25), from problems taken in seeded order.

    With chains, single_number and multi_number pairs get a chain where one can be made (the pairs
    themselves are those drawn without); the report counts them.

    Each problem is used at most once: it gets the variation type with the largest unmet
    quota that it can do; a problem that can do none still needed is rejected with the reason
    of the first type tried.
    """
    remaining = quotas(n, mix or DEFAULT_MIX)
    report = AugmentReport(requested=n, chains=0 if chains else None)
    order = list(records)
    stable_rng("order", seed).shuffle(order)
    pairs = []
    for record in order:
        if not any(remaining.values()):
            break
        wanted = sorted((t for t in MATH_VARIATION_TYPES if remaining[t] > 0),
                        key=lambda t: (-remaining[t], MATH_VARIATION_TYPES.index(t)))
        pair, first_reason = None, None
        for variation_type in wanted:
            try:
                pair = augment_problem(record, variation_type, seed, chain=chains)
                break
            except Rejected as rejection:
                first_reason = first_reason or str(rejection)
                if str(rejection) in UNUSABLE_PROBLEM_REASONS:
                    break  # the problem itself is unusable, whatever the type
        if pair is None:
            report.reject(first_reason, record.id)
            continue
        pairs.append(pair)
        remaining[pair.variation_type] -= 1
        report.produced[pair.variation_type] += 1
        if pair.chain is not None:
            report.chains += 1
    return pairs, report
