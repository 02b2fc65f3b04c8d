"""Final-answer extraction and outcome classification (math and QA).

Math: :func:`extract_math_answer` looks, in this order of precedence, for
1. the last ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces handled; the first number inside),
2. the last ``#### x`` (GSM8K style; the first number after it),
3. the last "answer is" / "answer:" (the first number after it).
A text with none of these states no final answer: the result is ``method="none"`` and no value,
never a guess from the last number (a run cut by the token limit mid-calculation would otherwise
be scored by whatever number it last wrote). The last number is kept apart, clearly named, in
``MathAnswer.last_number`` for inspection.
Numbers may carry signs (``-``, unicode minus), thousands commas (``1,200``), decimals, currency
and units (``$12.50``, ``7 apples``, ``50%`` -> 50) and simple fractions (``3/4``, ``\\frac{3}{4}``);
values are exact :class:`fractions.Fraction` and compare with a small tolerance.

Outcome (:func:`classify_math` / :func:`classify_qa`): ``unfinished`` when the text states no
final answer, else ``adapted`` when the answer equals B's, ``stale`` when it equals A's, ``other``
otherwise. When A and B
have the same answer (identical-problem controls) a matching answer counts as ``adapted`` -- it
is correct for the problem the model was finally given -- and the result says
``answers_identical=True`` so reports can keep controls apart.

QA: SQuAD-style normalization (lowercase, drop punctuation and the articles a/an/the, collapse
whitespace), exact match and token F1 taking the maximum over the acceptable answers.
"""

from __future__ import annotations

import collections
import re
import string
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import NamedTuple

OUTCOMES = ("adapted", "stale", "other", "unfinished")
QA_F1_THRESHOLD = 0.5  # token F1 at or above which a QA answer "equals" a gold answer list

_NUM = re.compile(
    r"(?<![\w.])(?P<sign>[-−–])?\$?\s?"
    r"(?P<int>\d{1,3}(?:,\d{3})+|\d+)?(?P<dec>\.\d+)?"
    r"(?:\s?/\s?(?P<den>\d+(?:\.\d+)?))?"
)
_ANSWER_IS = re.compile(r"answer\s*(?:is|=|:)\s*:?", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<!\b[A-Z][a-z])(?<!\bMrs)(?<!\bSt)(?<=[^\s.\d])[.!?](?=\s|$)")
_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")


class MathAnswer(NamedTuple):
    value: Fraction | None
    text: str | None  # canonical text of value ("12", "2.5", "1/3"), None if not found
    method: str  # "boxed" | "####" | "answer_is" | "none" (no final answer stated)
    last_number: str | None = None  # the last number in the text: for inspection, never the answer


def _numbers(text: str) -> list[Fraction]:
    out = []
    for m in _NUM.finditer(text):
        if m.group("int") is None and m.group("dec") is None:
            continue
        raw = (m.group("int") or "0").replace(",", "") + (m.group("dec") or "")
        try:
            value = Fraction(Decimal(raw))
            if m.group("den") is not None:
                den = Fraction(Decimal(m.group("den")))
                if den == 0:
                    continue
                value /= den
        except (InvalidOperation, ValueError, ZeroDivisionError):
            continue
        out.append(-value if m.group("sign") else value)
    return out


def parse_number(text: str) -> Fraction | None:
    """The first number in ``text`` (see module docstring for the accepted forms), else None."""
    nums = _numbers(_clean_latex(text))
    return nums[0] if nums else None


def format_value(value: Fraction) -> str:
    """Canonical text: integers plain, terminating decimals as decimals, else ``p/q``."""
    if value.denominator == 1:
        return str(value.numerator)
    d = value.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    if d == 1:
        return format(Decimal(value.numerator) / Decimal(value.denominator), "f")
    return f"{value.numerator}/{value.denominator}"


def _clean_latex(text: str) -> str:
    for _ in range(3):  # nested \frac, innermost first
        text = _FRAC.sub(r"(\1)/(\2)", text)
    text = re.sub(r"\((-?[\d.,]+)\)/\((-?[\d.,]+)\)", r"\1/\2", text)
    text = re.sub(r"\\text\{[^{}]*\}|\\(?:mathrm|textbf|mbox)\{([^{}]*)\}", r" \1 ", text)
    return text.replace("\\$", "$").replace("\\%", "%").replace("\\!", "").replace("\\,", "").replace("{,}", ",")


def _last_boxed(text: str) -> str | None:
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]
    if not starts:
        return None
    i = starts[-1]
    depth, j = 1, i
    while j < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        j += 1
    return text[i : j - 1 if depth == 0 else j]


def extract_math_answer(text: str) -> MathAnswer:
    """The final numeric answer of a math solution (see module docstring for the rules)."""
    text = text or ""
    boxed = _last_boxed(text)
    if boxed is not None:
        nums = _numbers(_clean_latex(boxed))
        if nums:
            return MathAnswer(nums[0], format_value(nums[0]), "boxed")
    cleaned = _clean_latex(text)
    if "####" in cleaned:
        nums = _numbers(cleaned.rsplit("####", 1)[1])
        if nums:
            return MathAnswer(nums[0], format_value(nums[0]), "####")
    hits = list(_ANSWER_IS.finditer(cleaned))
    if hits:
        nums = _numbers(cleaned[hits[-1].end() :])
        if nums:
            return MathAnswer(nums[0], format_value(nums[0]), "answer_is")
    nums = _numbers(cleaned)
    return MathAnswer(None, None, "none", format_value(nums[-1]) if nums else None)


def numbers_equal(a: Fraction | None, b: Fraction | None, rel_tol: float = 1e-6, abs_tol: float = 1e-9) -> bool:
    """Exact equality, or relative/absolute tolerance on floats (``2.50 == 5/2``)."""
    if a is None or b is None:
        return False
    if a == b:
        return True
    fa, fb = float(a), float(b)
    return abs(fa - fb) <= max(abs_tol, rel_tol * max(abs(fa), abs(fb)))


def _gold_value(answer) -> Fraction | None:
    if isinstance(answer, Fraction):
        return answer
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        return Fraction(str(answer))
    return parse_number(str(answer))  # a gold answer is the number itself, not a solution text


def cut_mid_number(text: str, finished: bool) -> bool:
    """A run stopped by the token limit whose text ends in a digit may have its last number cut
    ("The answer is 1" of "12"): such an answer is not taken as stated."""
    return not finished and bool(re.search(r"\d\s*$", text or ""))


def classify_math(text: str, answer_a, answer_b, finished: bool = True) -> dict:
    """Outcome of a math run: ``{outcome, answer, answer_method, last_number, answers_identical}``.

    ``finished``: the run ended by itself (end of sequence), not by the token limit.
    """
    pred = extract_math_answer(text)
    if pred.value is not None and cut_mid_number(text, finished):
        pred = MathAnswer(None, None, "none", pred.last_number or pred.text)
    a, b = _gold_value(answer_a), _gold_value(answer_b)
    if pred.value is None:
        outcome = "unfinished"
    elif numbers_equal(pred.value, b):
        outcome = "adapted"
    elif numbers_equal(pred.value, a):
        outcome = "stale"
    else:
        outcome = "other"
    return {
        "outcome": outcome,
        "answer": pred.text,
        "answer_method": pred.method,
        "last_number": pred.last_number,
        "answers_identical": numbers_equal(a, b),
    }


# ---------------------------------------------------------------- QA (SQuAD-style)


def normalize_answer(s: str) -> str:
    """SQuAD normalization: lowercase, no punctuation, no articles, single spaces."""
    s = (s or "").lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def exact_match(prediction: str, golds) -> float:
    """1.0 if the normalized prediction equals any normalized gold answer, else 0.0."""
    golds = [golds] if isinstance(golds, str) else list(golds)
    p = normalize_answer(prediction)
    return float(any(p == normalize_answer(g) for g in golds))


def _f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, golds) -> float:
    """Max SQuAD token F1 of ``prediction`` over the gold answers (0.0 for an empty list)."""
    golds = [golds] if isinstance(golds, str) else list(golds)
    p = normalize_answer(prediction).split()
    return max((_f1(p, normalize_answer(g).split()) for g in golds), default=0.0)


def extract_qa_answer(text: str) -> str:
    """The answer span of a free-text QA response.

    After the last "answer is" / "answer:" up to the end of that sentence or line if present;
    otherwise the first non-empty line (up to its first sentence end). Markdown emphasis removed.
    """
    return _qa_span(text)[0]


def _qa_span(text: str) -> tuple[str, str, bool]:
    """(answer span, method, complete): method "answer_is" or "first_line" (see
    :func:`extract_qa_answer`); complete: the statement ends within the text (see
    :func:`_statement_complete`)."""
    text = (text or "").replace("**", "").replace("__", "")
    hits = list(_ANSWER_IS.finditer(text))
    rest = text[hits[-1].end() :] if hits else next((ln for ln in text.splitlines() if ln.strip()), "")
    complete = _statement_complete(rest)
    rest = rest.strip().split("\n", 1)[0]
    rest = _SENTENCE_END.split(rest, maxsplit=1)[0]
    return rest.strip().rstrip(".!?").strip(), ("answer_is" if hits else "first_line"), complete


# The end of a statement: a line break after some text, or ., ! or ? followed by a space or the end of the text.
_STATEMENT_END = re.compile(r"\S[^\n]*?(?:\n|[.!?](?=\s|$))")
# A number run into a word just before that end ("fire1."): a word cut off and a numbered list begun.
_GLUED_NUMBER = re.compile(r"[^\W\d_]\d+[.!?]$")


def _statement_complete(rest: str) -> bool:
    """Does the statement at the start of ``rest`` end within it? Only then was an answer stated in
    answer form when the token limit stopped the run: a statement the limit cut mid-sentence
    ("The answer is: The story takes place in a kingdom where ...") is narration in progress, and
    one broken off by a numbered list ("The jar of fire1. The jar of fireflies is ...") was never
    finished."""
    match = _STATEMENT_END.search(rest)
    return bool(match) and not _GLUED_NUMBER.search(match.group().rstrip("\n"))


def classify_qa(text: str, answers_a, answers_b, f1_threshold: float = QA_F1_THRESHOLD,
                finished: bool = True) -> dict:
    """Outcome of a QA run from the extracted answer's token F1 against A's and B's answer lists.

    unfinished: the run was stopped by the token limit and stated no complete answer: no "answer
    is" statement (its first line is then a sentence in progress, not an answer), or one that the
    limit cut before its sentence ended or that broke off into a numbered list (a phrase of an
    answer inside narration in progress is not an answer); or nothing was extracted; adapted:
    F1_B >= threshold and F1_B >= F1_A, or the answer span contains one of B's answers and none of
    A's; stale: the same with A and B swapped; other otherwise. Also reports EM/F1 against both
    lists and whether the whole normalized text
    contains a gold answer.
    """
    pred, method, complete = _qa_span(text)
    f1_a, f1_b = token_f1(pred, answers_a), token_f1(pred, answers_b)
    # A sentence answer ("The lost boat was the Marigold") has a low F1 against a short gold answer;
    # it still names one answer and not the other when exactly one list appears in it.
    span = f" {normalize_answer(pred)} "
    names_a = any(g and f" {g} " in span for g in (normalize_answer(x) for x in answers_a))
    names_b = any(g and f" {g} " in span for g in (normalize_answer(x) for x in answers_b))
    if not pred or (not finished and (method == "first_line" or not complete)):
        outcome = "unfinished"
    elif (f1_b >= f1_threshold and f1_b >= f1_a) or (names_b and not names_a):
        outcome = "adapted"
    elif (f1_a >= f1_threshold and f1_a > f1_b) or (names_a and not names_b):
        outcome = "stale"
    else:
        outcome = "other"
    full = f" {normalize_answer(text)} "
    na = {normalize_answer(g) for g in answers_a}
    nb = {normalize_answer(g) for g in answers_b}
    return {
        "outcome": outcome,
        "answer": pred,
        "answer_method": method,
        "answers_identical": bool(na & nb),
        "em_a": exact_match(pred, answers_a),
        "em_b": exact_match(pred, answers_b),
        "f1_a": f1_a,
        "f1_b": f1_b,
        "contains_a": any(g and f" {g} " in full for g in na),
        "contains_b": any(g and f" {g} " in full for g in nb),
    }
