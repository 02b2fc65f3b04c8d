"""The notes flag on hand-written generations (measure.metrics.notes)."""

from fractions import Fraction

from measure.data.pairs import ProblemPair
from measure.metrics.notes import affected_quantities, notes_before_change, numbers_in


def math_pair(question_a, question_b, answer_a, answer_b, variation_type="single_number", changes=None):
    return ProblemPair.from_dict({
        "id": "p", "kind": "math", "variation_type": variation_type, "question_a": question_a,
        "question_b": question_b, "answer_a": answer_a, "answer_b": answer_b,
        "metadata": {"changes": changes} if changes else {}})


SINGLE = math_pair("Tia has 20 stickers and gives 5 to her brother. How many stickers does Tia have left?",
                   "Tia has 22 stickers and gives 5 to her brother. How many stickers does Tia have left?",
                   "15", "17", changes=[{"old": "20", "new": "22", "unit": "stickers", "prefix": ""}])


def test_affected_quantities_are_the_changed_numbers_and_the_old_answer():
    assert affected_quantities(SINGLE) == {Fraction(20), Fraction(15)}


def test_a_number_inside_a_longer_number_does_not_count():
    assert not notes_before_change(SINGLE, "She had 150 stickers, then 2.0 and 1.5 and x15 and 200")
    assert not notes_before_change(SINGLE, "Tia gives away 5 stickers")  # 5 is not changed


def test_a_changed_number_or_the_old_answer_counts():
    assert notes_before_change(SINGLE, "Tia starts with 20 stickers")
    assert notes_before_change(SINGLE, "So 20 - 5 = 15.")
    assert notes_before_change(SINGLE, "The answer is 15.")


def test_numbers_written_as_words_count_by_value():
    assert notes_before_change(SINGLE, "Tia has twenty stickers")
    assert notes_before_change(SINGLE, "fifteen are left")
    assert not notes_before_change(SINGLE, "Tia has twenty-two stickers")  # 22, not 20
    assert numbers_in("Sam has Five apples and twenty one pears, 1,500 seeds") == [
        Fraction(1500), Fraction(5), Fraction(21)]


def test_added_step_affects_only_the_answer():
    pair = math_pair("Sam has 5 apples. How many apples does Sam have?",
                     "Sam has 5 apples. How many apples does Sam have? Now suppose the answer decreases by 1. "
                     "What is the new answer?", "5", "4", variation_type="added_step")
    assert affected_quantities(pair) == {Fraction(5)}
    assert notes_before_change(pair, "Sam has five apples")
    assert not notes_before_change(pair, "Sam has some apples, 4 or 1")


def test_changes_inferred_from_the_questions_when_metadata_lacks_them():
    pair = math_pair("Sam has 3 apples and gets 2 more.", "Sam has 3 apples and gets 5 more.", "5", "8")
    assert affected_quantities(pair) == {Fraction(2), Fraction(5)}
    assert not notes_before_change(pair, "Sam has 3 apples")


def test_an_identical_control_has_no_notes():
    pair = math_pair("Sam has 3 apples.", "Sam has 3 apples.", "3", "3", variation_type=None)
    assert not notes_before_change(pair, "Sam has 3 apples, the answer is 3")


def test_a_story_question_flags_an_answer_to_a():
    pair = ProblemPair.from_dict({
        "id": "s", "kind": "qa", "variation_type": "question_switch", "question_a": "What colour was the lantern?",
        "question_b": "What was the boat called?", "answer_a": "green", "answer_b": "the Marigold",
        "answers_a": ["green", "bright green"]})
    assert notes_before_change(pair, "The lantern was Green.")
    assert not notes_before_change(pair, "The lantern was greenish")
    assert not notes_before_change(pair, "The boat was the Marigold")
