"""What a user may submit to run an experiment, checked before anything reaches the engine.

Every limit is here, so the page, the API and the tests share one set of numbers. A bad field is
a :class:`RequestError` naming the field and what is allowed; the app answers it with 422.
"""

from __future__ import annotations

from dataclasses import dataclass

from measure.engine.conditions import CONDITION_NAMES, DEFAULT_CONDITIONS
from measure.engine.engine import UPDATE_FORMS, check_config
from measure.points import InjectionPoint
from measure.settings import DEFAULTS

#: Bytes of one request body; the largest legitimate one (a story context and two questions) is
#: far below it.
MAX_BODY_BYTES = 64 * 1024
MAX_QUESTION_CHARS = 2000
MAX_CONTEXT_CHARS = 8000
MAX_UPDATE_CHARS = 1000
MAX_POINTS = 4
#: Tokens per run at most: a live experiment is for seconds to a minute, not a measurement.
MAX_NEW_TOKENS = 256
DEFAULT_NEW_TOKENS = 48
DEFAULT_POINTS = tuple(DEFAULTS.points)  # the run's (measure.settings)
KINDS = ("math", "qa")
PAIR_ID_CHARS = 100
POINT_CHARS = 40  # "8", "0.5", or a content-timed point such as "after:quantity"
#: Lists and objects inside a body at most this deep (a legitimate body is 2 deep).
MAX_DEPTH = 8


class RequestError(ValueError):
    """A submitted field is missing or out of bounds; ``field`` names it."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class ExperimentSpec:
    """A checked experiment request. Texts are None where the user gave none (a picked pair's
    own text, or a generated update, is used then)."""

    dataset: str | None
    pair_id: str | None
    kind: str | None
    question_a: str | None
    question_b: str | None
    context: str | None
    update: str | None
    update_form: str
    points: tuple[InjectionPoint, ...]
    point_texts: tuple[str, ...]
    conditions: tuple[str, ...]
    max_new_tokens: int
    calibration: str | None  # id of a run folder whose calibration marks the events

    def settings(self) -> dict:
        """The settings as the page shows them back."""
        return {"points": list(self.point_texts), "conditions": list(self.conditions),
                "max_new_tokens": self.max_new_tokens, "update_form": self.update_form,
                "calibration": self.calibration}


def _unencodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def check_body(body) -> None:
    """Refuse what no field accepts but could still break an error message or a response: text
    that is not valid Unicode (a lone surrogate, which JSON's \\ud800 escape can carry; it could
    be neither shown nor stored), and nesting deeper than ``MAX_DEPTH``. The field named is the
    top-level key."""
    stack = [(field, value, 1) for field, value in body.items()] if isinstance(body, dict) else [("body", body, 0)]
    while stack:
        field, value, depth = stack.pop()
        if _unencodable(field) or (isinstance(value, str) and _unencodable(value)):
            raise RequestError(_shown(field), "holds text that is not valid Unicode (a lone surrogate); send UTF-8 text")
        if isinstance(value, (dict, list)) and depth >= MAX_DEPTH:
            raise RequestError(_shown(field), f"nests lists or objects more than {MAX_DEPTH} deep")
        if isinstance(value, dict):
            for key, inner in value.items():
                if _unencodable(key):
                    raise RequestError(_shown(field), "holds a name that is not valid Unicode text (a lone surrogate)")
                stack.append((field, inner, depth + 1))
        elif isinstance(value, list):
            stack.extend((field, inner, depth + 1) for inner in value)


def _shown(field: str) -> str:
    return field.encode("utf-8", "backslashreplace").decode("utf-8")[:60]


def text_field(body: dict, name: str, limit: int, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise RequestError(name, "is required (or pick a pair)")
        return None
    if not isinstance(value, str):
        raise RequestError(name, f"must be text, got {type(value).__name__}")
    if len(value) > limit:
        raise RequestError(name, f"is {len(value)} characters long; at most {limit} are accepted")
    if "\x00" in value:
        raise RequestError(name, "contains a NUL character")
    return value.strip()


def choice_field(body: dict, name: str, allowed, default):
    value = body.get(name, default)
    if value is None:
        value = default
    if value not in allowed:
        raise RequestError(name, f"{value!r} is not one of {', '.join(map(str, allowed))}")
    return value


def _points(body: dict) -> tuple[str, ...]:
    raw = body.get("points", list(DEFAULT_POINTS))
    if isinstance(raw, str):
        raw = [part for part in raw.split(",") if part.strip()]
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise RequestError("points", "give one or more injection points, e.g. 8 or 8,0.5")
    if len(raw) > MAX_POINTS:
        raise RequestError("points", f"{len(raw)} points given; at most {MAX_POINTS} per experiment")
    texts = []
    for item in raw:
        if isinstance(item, bool) or not isinstance(item, (str, int, float)) or len(str(item)) > POINT_CHARS:
            raise RequestError("points", f"{str(item)[:20]!r} is not an injection point (a token count or a fraction)")
        texts.append(str(item).strip())
    return tuple(texts)


def _conditions(body: dict) -> tuple[str, ...]:
    raw = body.get("conditions", list(DEFAULT_CONDITIONS))
    if isinstance(raw, str):
        raw = [part.strip() for part in raw.split(",") if part.strip()]
    if not isinstance(raw, list) or not raw or not all(isinstance(name, str) for name in raw):
        raise RequestError("conditions", f"give a list of condition names from {', '.join(CONDITION_NAMES)}")
    unknown = [name for name in raw if name not in CONDITION_NAMES]
    if unknown:
        shown = ", ".join(repr(name[:30]) for name in unknown[:3])
        raise RequestError("conditions", f"unknown condition(s) {shown}; choose from {', '.join(CONDITION_NAMES)}")
    return tuple(dict.fromkeys(raw))


def _max_new_tokens(body: dict, limit: int) -> int:
    value = body.get("max_new_tokens", DEFAULT_NEW_TOKENS)
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit() and len(value.strip()) <= 6:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError("max_new_tokens", f"must be a whole number from 2 to {limit}")
    if not 2 <= value <= limit:
        raise RequestError("max_new_tokens", f"{value} is outside 2..{limit}")
    return value


def _identifier(body: dict, name: str) -> str | None:
    value = body.get(name)
    if value in (None, ""):
        return None
    if not isinstance(value, str) or len(value) > PAIR_ID_CHARS:
        raise RequestError(name, f"must be text of at most {PAIR_ID_CHARS} characters")
    return value


def parse_experiment(body, max_new_tokens_limit: int = MAX_NEW_TOKENS) -> ExperimentSpec:
    """Check a decoded JSON body; raise :class:`RequestError` on the first bad field."""
    if not isinstance(body, dict):
        raise RequestError("body", "must be a JSON object")
    pair_id = _identifier(body, "pair_id")
    dataset = _identifier(body, "dataset")
    if pair_id is not None and dataset is None:
        raise RequestError("dataset", "is required with pair_id (e.g. builtin-easy)")
    needs_text = pair_id is None
    question_a = text_field(body, "question_a", MAX_QUESTION_CHARS, required=needs_text)
    question_b = text_field(body, "question_b", MAX_QUESTION_CHARS)
    if needs_text and question_b is None:
        question_b = question_a  # no changed problem given: an identical control
    kind = body.get("kind")
    if kind is not None or needs_text:
        kind = choice_field(body, "kind", KINDS, "math")
    point_texts = _points(body)
    conditions = _conditions(body)
    max_new_tokens = _max_new_tokens(body, max_new_tokens_limit)
    update_form = choice_field(body, "update_form", UPDATE_FORMS, "erratum")
    try:
        points = check_config(max_new_tokens, point_texts, conditions, update_form)
    except ValueError as error:
        message = str(error)
        field = next((name for name in ("points", "max_new_tokens") if message.startswith(name)), "points")
        raise RequestError(field, message.removeprefix(f"{field}: ").removeprefix(field).strip()) from None
    # One lane per point label: "4" and "04" are the same point.
    unique: dict[str, tuple] = {}
    for point, text in zip(points, point_texts):
        unique.setdefault(point.label, (point, text))
    points, point_texts = tuple(p for p, _ in unique.values()), tuple(t for _, t in unique.values())
    return ExperimentSpec(
        dataset=dataset, pair_id=pair_id, kind=kind,
        question_a=question_a, question_b=question_b,
        context=text_field(body, "context", MAX_CONTEXT_CHARS),
        update=text_field(body, "update", MAX_UPDATE_CHARS),
        update_form=update_form, points=points, point_texts=point_texts, conditions=conditions,
        max_new_tokens=max_new_tokens, calibration=_identifier(body, "calibration"),
    )
