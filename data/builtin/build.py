"""Build the built-in problem pairs: measure/data/builtin/math_pairs.jsonl and context_pairs.jsonl.

    .venv/bin/python data/builtin/build.py           # rewrite both files
    .venv/bin/python data/builtin/build.py --check   # exit 1 if the files differ from what it builds

Kept as committed: the first 52 math pairs (builtin_00..builtin_51) and the first 10 story pairs
(builtin_story_00..09), because a committed baseline and the suites' ``--limit`` refer to them; the
build only adds ``metadata.tier`` to them (see EASY_STORIES; "standard" otherwise). Everything after them is generated here:

* Math pairs: problem A (text and equation) is written for this project in the tables below; B, its
  equation and answer, the erratum and ``metadata.changes`` / ``step_*`` come from
  ``measure.data.augment.augment_problem`` (its draw is seeded by the key and seed in the table:
  ``stable_rng("augment", seed, key, variation_type)``); restatement, repeat and noise from
  ``measure.data.updates.build_update_texts`` keyed by the pair id and 0, as for the first 52.
  Single and multi_number pairs also get a chain A -> B -> C from the same call (``chain=True``);
  the kept lines' chains (math: ``add_chain`` seed 0; stories: a third question) are kept as written.
* Tiers (``metadata.tier``): "easy" pairs are written for the embedded SmolLM2-135M-Instruct to
  solve uninterrupted: one operation (or, for added_step, a look-up question whose added step is the
  one operation) on small whole numbers, short sentences, and the closing sentence EASY_SUFFIX,
  which made the model state its final answer far more often in trials. Their wording, numbers and
  augment draws were iterated against the model's greedy output
  (benchmarks/builtin_accuracy.py), so its accuracy on them is an in-sample figure. Everything else
  is "standard".
* Story pairs (kind "qa", variation "question_switch" or identical controls): stories.py; erratum
  from ``question_switch_erratum`` (or QA_CONTROL_ERRATUM), the rest from build_update_texts.

Every pair must pass ``check_pair``; math answers must be whole numbers (new pairs).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE))

from stories import STORIES  # noqa: E402

from measure.data.arithmetic import evaluate, format_number, parse_expression  # noqa: E402
from measure.data.augment import augment_problem  # noqa: E402
from measure.data.builtin import BUILTIN_DIR, BUILTIN_FILES  # noqa: E402
from measure.data.constraints import check_pair  # noqa: E402
from measure.data.items import SourceItem  # noqa: E402
from measure.data.pairs import ProblemPair  # noqa: E402
from measure.data.updates import QA_CONTROL_ERRATUM, build_update_texts, question_switch_erratum  # noqa: E402

# Written into the package (package data), so an installed measure finds them; this script and stories.py stay out of it.
MATH_FILE, STORY_FILE = (BUILTIN_DIR / name for name in BUILTIN_FILES)
KEPT_MATH, KEPT_STORIES = 52, 10
EASY_SUFFIX = " Give the answer as a number."
MATH_ORIGIN = "problem A written for this project; B made by measure.data.augment and reviewed (data/builtin/build.py)"
STORY_ORIGIN = "story and questions written for this project"

S, M, A, C = "single_number", "multi_number", "added_step", None

# (variation type, augment key, augment seed, problem A, equation A). EASY_SUFFIX is appended.
EASY = [
    (S, "c1", 0, "Raj has 2 kites and buys 5 more. How many kites does Raj have?", "2+5"),
    (M, "c0", 0, "Nina has 6 books and gets 3 more. How many books does Nina have?", "6+3"),
    (A, "c100", 2, "Sam has 5 apples. How many apples does Sam have?", "5"),
    (C, "c3", 0, "There are 8 boys and 7 girls in a room. How many children are in the room?", "8+7"),
    (S, "c2", 0, "Lily has 3 boxes with 4 crayons in each. How many crayons does Lily have?", "3*4"),
    (M, "c4", 2, "A bus has 5 people on it. Then 4 more people get on. How many people are on the bus?", "5+4"),
    (A, "c101", 3, "Leo owns 8 marbles. How many marbles does Leo own?", "8"),
    (C, "c7", 0, "Mia had 8 cookies and ate 3. How many cookies are left?", "8-3"),
    (S, "c6", 1, "Tia has 20 stickers and gives 5 to her brother. How many stickers does Tia have left?", "20-5"),
    (M, "c5", 0, "Sara has 4 red beads and 6 blue beads. How many beads does Sara have?", "4+6"),
    (A, "c102", 2, "Ava has 9 shells. How many shells does Ava have?", "9"),
    (C, "c10", 0, "Ava has 4 packs with 2 cards in each. How many cards does Ava have?", "4*2"),
    (S, "c8", 0, "Sam has 3 apples and gets 2 more. How many apples does Sam have?", "3+2"),
    (M, "c9", 2, "Leo has 4 marbles and gets 3 more. How many marbles does Leo have?", "4+3"),
    (A, "c103", 2, "A tree has 3 birds on it. How many birds are on the tree?", "3"),
    (C, "c23", 0, "Dev has 9 toy cars and gets 6 more. How many toy cars does Dev have?", "9+6"),
    (S, "c11", 0, "Eva has 7 coins. Max has 2 coins. How many coins do Eva and Max have in all?", "7+2"),
    (M, "c12", 0, "There are 4 green apples and 5 red apples. How many apples are there?", "4+5"),
    (A, "c104", 2, "Ben has 10 stamps. How many stamps does Ben have?", "10"),
    (C, "c25", 0, "Amy read 5 pages in the morning and 7 pages at night. How many pages did Amy read?", "5+7"),
    (S, "c13", 0, "Kai has 3 dogs and 2 cats. How many pets does Kai have?", "3+2"),
    (M, "c15", 0, "Ella has 6 dolls and gets 2 more. How many dolls does Ella have?", "6+2"),
    (A, "c109", 0, "Omar owns 6 hats. How many hats does Omar own?", "6"),
    (C, "c41", 0, "A team has 10 players. Then 2 more players join. How many players does the team have?", "10+2"),
    (S, "c18", 1, "A class has 12 girls and 9 boys. How many children are in the class?", "12+9"),
    (M, "c26", 1, "A pond has 8 fish. Then 5 more fish are added. How many fish are in the pond?", "8+5"),
    (A, "c112", 2, "A shelf holds 9 books. How many books are on the shelf?", "9"),
    (C, "c44", 0, "Gil has 7 red balls and 8 blue balls. How many balls does Gil have?", "7+8"),
    (S, "c29", 0, "Tom picked 6 apples and Ann picked 8 apples. How many apples did they pick in all?", "6+8"),
    (M, "c32", 0, "Max has 5 boxes with 2 toys in each. How many toys does Max have?", "5*2"),
    (A, "c114", 0, "A pond has 7 ducks. How many ducks are on the pond?", "7"),
    (S, "r15", 1, "Zoe has 8 shells and gets 6 more. How many shells does Zoe have?", "8+6"),
    (M, "c21", 0, "A garden has 7 red roses and 5 white roses. How many roses are in the garden?", "7+5"),
    (A, "l2", 0, "Tom has 8 coins. How many coins does Tom have?", "8"),
    (S, "c35", 1, "Hugo has 8 stickers and gets 7 more. How many stickers does Hugo have?", "8+7"),
    (M, "n5", 1, "Uma has 3 jars with 6 buttons in each. How many buttons does Uma have?", "3*6"),
    (A, "c111", 0, "Lily has 11 ribbons. How many ribbons does Lily have?", "11"),
    (S, "c22", 0, "Rita has 11 pencils and buys 4 more. How many pencils does Rita have?", "11+4"),
    (M, "n2", 0, "Mo has 6 bells and gets 5 more. How many bells does Mo have?", "6+5"),
    (A, "c113", 2, "Kai has 14 cards. How many cards does Kai have?", "14"),
]

# (variation type, augment seed, problem A, equation A); the augment key is the pair id.
STANDARD = [
    (S, 0, "A florist has 45 roses and ties them into bunches of 9. How many bunches does she make?", "45/9"),
    (M, 0, "Karim buys 6 packs of juice with 4 bottles in each pack. He drinks 5 bottles. How many bottles are left?", "6*4-5"),
    (A, 0, "A school bus makes 3 trips and carries 28 children on each trip. How many children does it carry?", "3*28"),
    (C, 0, "Hana had 64 dollars. She bought a lamp for 27 dollars. How much money does she have left?", "64-27"),
    (S, 0, "A bakery sells 38 croissants in the morning and 47 in the afternoon."
           " How many croissants does it sell in the day?", "38+47"),
    (M, 0, "There are 9 tables in a cafe, and each table has 4 chairs."
           " 7 of the chairs are broken. How many chairs are not broken?", "9*4-7"),
    (A, 0, "A cyclist rides 18 kilometers each day for 6 days. How many kilometers does she ride?", "18*6"),
    (C, 0, "A library had 240 books and bought 65 more. How many books does it have now?", "240+65"),
    (S, 0, "Pablo shares 96 stickers equally among 8 friends. How many stickers does each friend get?", "96/8"),
    (M, 0, "A farmer has 23 cows and 3 times as many sheep. How many sheep does he have?", "23*3"),
    (A, 0, "Mina scored 78 points in one game and 85 in the next. How many points did she score in both games?", "78+85"),
    (C, 0, "A box has 24 crayons."
           " A teacher buys 7 boxes and gives away 30 crayons. How many crayons does she have left?", "24*7-30"),
    (S, 0, "A hotel has 12 floors with 16 rooms on each floor. How many rooms does the hotel have?", "12*16"),
    (M, 0, "A garden hose is 50 meters long. Felix cuts off 18 meters. How long is the hose now?", "50-18"),
    (A, 0, "An aquarium keeps 135 fish in 9 tanks, the same number in each tank. How many fish are in each tank?", "135/9"),
    (C, 0, "Lara saves 8 dollars each week. How much does she save in 13 weeks?", "8*13"),
    (S, 0, "A concert hall sold 356 tickets on Friday and 289 on Saturday. How many tickets did it sell?", "356+289"),
    (M, 0, "Ivo has 150 stamps. He puts 25 stamps on each page of an album. How many pages does he fill?", "150/25"),
    (A, 0, "A bus had 42 passengers."
           " At the first stop 15 got off and 9 got on. How many passengers are on the bus now?", "42-15+9"),
    (C, 0, "A muffin costs 3 dollars and a juice costs 2 dollars."
           " Rosa buys 4 muffins and 5 juices. How much does she pay?", "4*3+5*2"),
    (S, 0, "A factory packs 216 eggs into cartons of 12. How many cartons does it fill?", "216/12"),
    (M, 0, "Theo walks 3 kilometers to school each morning and rides the bus home."
           " How many kilometers does he walk in 20 days?", "3*20"),
    (A, 0, "A shop had 80 umbrellas. It sold 26 on Monday and 31 on Tuesday. How many umbrellas are left?", "80-26-31"),
    (C, 0, "Sofia reads 35 pages a day. How many pages does she read in 6 days?", "35*6"),
    (S, 0, "A field has 17 rows of corn with 22 plants in each row. How many corn plants are there?", "17*22"),
    (M, 0, "Nadia baked 60 cookies and put them into bags of 5."
           " She gave 4 bags to her neighbours. How many bags does she have left?", "60/5-4"),
    (A, 0, "A train has 8 cars, and each car seats 56 people. How many people can the train seat?", "8*56"),
    (C, 0, "Oscar had 125 marbles. He lost 38 of them. How many marbles does Oscar have now?", "125-38"),
    (S, 0, "A painter uses 4 liters of paint for each room. How many liters does she need for 11 rooms?", "4*11"),
    (M, 0, "A zoo has 14 monkeys, 9 zebras and 6 lions. How many of these animals does the zoo have in all?", "14+9+6"),
    (A, 0, "Elena earns 15 dollars an hour. How much does she earn in 8 hours?", "15*8"),
    (S, 0, "A tank holds 300 liters of water. 75 liters leak out. How many liters are left in the tank?", "300-75"),
    (M, 0, "Marco has 48 photos and puts 6 on each page of an album. How many pages does he use?", "48/6"),
    (A, 0, "A bookshop sold 19 novels and 27 comics in the morning. How many books did it sell?", "19+27"),
    (S, 0, "A runner trains on 5 mornings and runs 12 kilometers each morning. How many kilometers does he run?", "5*12"),
    (M, 0, "A class collected 93 cans on Monday and 58 cans on Tuesday. How many more cans did it collect on Monday?", "93-58"),
    (A, 0, "Each basket holds 15 apples. How many apples are in 9 baskets?", "15*9"),
    (S, 0, "There were 250 seats in a hall, and 187 people came to a play. How many seats were empty?", "250-187"),
    (M, 0, "A candle burns 2 centimeters every hour. How many centimeters does it burn in 14 hours?", "2*14"),
    (A, 0, "Tariq had 70 dollars."
           " He spent 18 dollars on a shirt and 24 dollars on shoes. How much money does he have left?", "70-18-24"),
]


def answer_of(equation: str) -> str:
    return format_number(evaluate(parse_expression(equation)))


def math_pair(pair_id: str, tier: str, variation_type: str | None, key: str, seed: int, question: str,
              equation: str) -> ProblemPair:
    record = SourceItem(id=key, source="builtin", question=question, answer=answer_of(equation), equation=equation)
    drawn = augment_problem(record, variation_type, seed, chain=True)  # single/multi_number: A -> B -> C
    texts = build_update_texts(drawn.question_a, drawn.question_b, drawn.erratum, pair_id, 0)
    kept = {name: drawn.metadata[name] for name in ("changes", "step_op", "step_number") if name in drawn.metadata}
    metadata = {"tier": tier, **kept, "augment": {"key": key, "seed": seed}, "origin": MATH_ORIGIN}
    return dataclasses.replace(drawn, id=pair_id, restatement=texts.restatement, repeat=texts.repeat,
                               noise=texts.noise, metadata=metadata)


#: Story pairs the embedded model answers right on both questions uninterrupted (A under the ignore
#: run, B under the oracle), with the reader's system prompt (measure.prompts.DEFAULT_QA_SYSTEM_PROMPT)
#: and measure.metrics.answers.classify_qa, greedy, 64 new tokens: 14 of 50 when measured. Selected
#: on that output, so, as for the easy math tier, the figure is in-sample.
EASY_STORIES = frozenset({
    "builtin_story_00", "builtin_story_02", "builtin_story_04", "builtin_story_17", "builtin_story_18",
    "builtin_story_21", "builtin_story_25", "builtin_story_37", "builtin_story_41", "builtin_story_44",
    "builtin_story_45", "builtin_story_47", "builtin_story_48", "builtin_story_49",
})


def story_tier(pair_id: str) -> str:
    return "easy" if pair_id in EASY_STORIES else "standard"


def story_pair(pair_id: str, context: str, question_a: str, answers_a: list[str], question_b: str | None,
               answers_b: list[str] | None) -> ProblemPair:
    control = question_b is None
    question_b, answers_b = (question_a, answers_a) if control else (question_b, answers_b)
    erratum = QA_CONTROL_ERRATUM if control else question_switch_erratum(question_a, question_b)
    texts = build_update_texts(question_a, question_b, erratum, pair_id, 0)
    return ProblemPair(
        id=pair_id, source="builtin", kind="qa", variation_type=None if control else "question_switch",
        question_a=question_a, question_b=question_b, answer_a=answers_a[0], answer_b=answers_b[0],
        answers_a=tuple(answers_a), answers_b=tuple(answers_b), equation_a=None, equation_b=None,
        context=context, erratum=texts.erratum, restatement=texts.restatement, repeat=texts.repeat,
        noise=texts.noise, metadata={"tier": story_tier(pair_id), "origin": STORY_ORIGIN})


def kept_lines(path: Path, count: int) -> list[str]:
    """The first `count` committed lines, unchanged but for metadata.tier (standard unless set)."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines()[:count]:
        record = json.loads(line)
        tier = "easy" if record["id"] in EASY_STORIES else record.get("metadata", {}).get("tier", "standard")
        record["metadata"] = {**record.get("metadata", {}), "tier": tier}
        lines.append(json.dumps(record, ensure_ascii=False))
    return lines


def new_math_pairs() -> list[ProblemPair]:
    rows = [("easy", t, key, seed, question + EASY_SUFFIX, eq) for t, key, seed, question, eq in EASY]
    rows += [("standard", t, None, seed, question, eq) for t, seed, question, eq in STANDARD]
    pairs = []
    for number, (tier, variation_type, key, seed, question, equation) in enumerate(rows, start=KEPT_MATH):
        pair_id = f"builtin_{number:02d}"
        pairs.append(math_pair(pair_id, tier, variation_type, key or pair_id, seed, question, equation))
    return pairs


def new_story_pairs() -> list[ProblemPair]:
    return [story_pair(f"builtin_story_{number:02d}", *story) for number, story in enumerate(STORIES, start=KEPT_STORIES)]


def build() -> dict[Path, str]:
    """{file: full text} for both files; raises AssertionError naming any pair that is not valid."""
    math, stories = new_math_pairs(), new_story_pairs()
    problems = {p.id: check_pair(p) for p in math + stories if check_pair(p)}
    assert not problems, f"pairs with violations: {problems}"
    for pair in math:
        for answer in (pair.answer_a, pair.answer_b):
            assert answer.isdigit(), f"{pair.id}: answer {answer!r} is not a whole number"
    texts = {}
    for path, kept, new in ((MATH_FILE, KEPT_MATH, math), (STORY_FILE, KEPT_STORIES, stories)):
        lines = kept_lines(path, kept) + [json.dumps(p.to_dict(), ensure_ascii=False) for p in new]
        ids = [json.loads(line)["id"] for line in lines]
        assert len(set(ids)) == len(ids), f"duplicate ids in {path.name}"
        texts[path] = "\n".join(lines) + "\n"
    return texts


def summary(texts: dict[Path, str]) -> str:
    out = []
    for path, text in texts.items():
        records = [json.loads(line) for line in text.splitlines()]
        counts = Counter((r["metadata"].get("tier"), r["variation_type"] or "control") for r in records)
        out.append(f"{path.name}: {len(records)} pairs; " + ", ".join(
            f"{tier}/{kind} {n}" for (tier, kind), n in sorted(counts.items())))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="build the built-in problem pairs")
    parser.add_argument("--check", action="store_true", help="only compare with the files on disk")
    args = parser.parse_args(argv)
    texts = build()
    if args.check:
        stale = [path.name for path, text in texts.items() if path.read_text(encoding="utf-8") != text]
        print(summary(texts))
        print("up to date" if not stale else f"out of date: {', '.join(stale)}")
        return 1 if stale else 0
    for path, text in texts.items():
        path.write_text(text, encoding="utf-8")
    print(summary(texts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
