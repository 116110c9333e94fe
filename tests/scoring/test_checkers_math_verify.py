"""Our math checker against a peer's own cases: all 269 rows of Math-Verify's test tables
(tests/data/math_verify), scored by our checker, by raw math-verify with its defaults (parse + verify) and by
raw math-verify with each table's own arguments."""

import json

import pytest

from lm_eval_moe.scoring import check_math, check_numeric
from lm_eval_moe.scoring.equivalence import answer_parts, parse_number
from lm_eval_moe.scoring.extract import extract_math_answer, final_box_group
from conftest import BENCHMARK_DATA

CASES = [json.loads(line) for line in
         (BENCHMARK_DATA / "math_verify" / "cases.jsonl").read_text().splitlines()]


def _raw_with_table_arguments(case: dict) -> bool:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    targets = [LatexExtractionConfig(boxed_match_priority=0) if kind == "latex" else ExprExtractionConfig()
               for kind in case["match_types"]]
    return bool(verify(parse(case["gold"], targets), parse(case["pred"], targets), float_rounding=case["precision"],
                       strict=case["strict"], allow_set_relation_comp=case["allow_set_relation_comp"]))


def _raw_default(case: dict) -> bool:
    from math_verify import parse, verify

    return bool(verify(parse(case["gold"]), parse(case["pred"])))


def test_agreement_with_math_verify_tables_matches_or_beats_raw_math_verify():
    boxed = ["\\boxed{" in case["pred"] for case in CASES]
    ours = [check_math(case["pred"], case["gold"]).correct == case["expected"] for case in CASES]
    default = [_raw_default(case) == case["expected"] for case in CASES]
    tables = [_raw_with_table_arguments(case) == case["expected"] for case in CASES]
    assert len(CASES) == 269 and sum(boxed) == 95
    boxed_ours = sum(ok for ok, is_boxed in zip(ours, boxed) if is_boxed)
    print(f"\nMath-Verify tables, rows agreeing with the expected verdict: ours {sum(ours)}/{len(CASES)} "
          f"({boxed_ours}/95 boxed), math-verify defaults {sum(default)}, with each table's arguments {sum(tables)}")
    assert sum(ours) >= sum(default), [case["source"] for case, ok in zip(CASES, ours) if not ok]
    assert boxed_ours == 95, [(case["gold"], case["pred"]) for case, ok, is_boxed in zip(CASES, ours, boxed)
                              if is_boxed and not ok]


@pytest.mark.parametrize("response, gold, correct", [
    ("so \\boxed{(2, 2)} and \\boxed{(6, 2)}", "(2, 2), (6, 2)", True),
    ("\\boxed{1},\\boxed{2},\\boxed{3}", "\\{1, 2, 3\\}", True),
    ("\\boxed{3}, \\boxed{1}, \\boxed{2}", "1, 2, 3", True),  # a set: any order
    ("\\boxed{1},\\boxed{2}", "1, 2, 3", False),  # a part missing
    ("\\( y_1 = \\boxed{2} \\) and \\( y_2 = \\boxed{5} \\)", "y_1 = 2, y_2 = 5", True),
    ("We get \\boxed{4}.\n\nSo the answer is \\boxed{6}.", "6", True),  # two answers: the last box
    ("\\boxed{4} and \\boxed{6}", "6", False),  # a hedge states both: one stated answer "4, 6", whatever the gold
    ("\\boxed{4} and \\boxed{6}", "4", False),
    ("\\boxed{1}, \\boxed{2}", "2", False),
    ("\\boxed{1}, \\boxed{2}", "1, 2", True),
    ("First I thought \\boxed{3}, but actually \\boxed{5}.", "5", True),  # a correction: the last box
    ("First \\boxed{3}. So x = \\boxed{5}", "3, 5", False),  # two answers, not one in two boxes
])
def test_answers_in_several_boxes(response, gold, correct):
    assert check_math(response, gold).correct is correct


def test_box_groups_and_gold_parts():
    assert final_box_group("\\boxed{1} papers and \\boxed{2} bins") == ["1", "2"]
    assert final_box_group("\\boxed{1} no no no \\boxed{2}") == ["2"]  # no connector: separate answers
    assert final_box_group("\\boxed{1}" + " and" * 30 + " \\boxed{2}") == ["2"]  # too far apart
    assert answer_parts("(2,1),(1,2)") == ["(2,1)", "(1,2)"] and answer_parts("[0, 1)") == ["[0, 1)"]
    assert answer_parts("1,000") == ["1,000"] and answer_parts("$k = 4, n = 2$") == ["k = 4", "n = 2"]


@pytest.mark.parametrize("text, value", [("1000,99", "100099/100"), ("0,111", "111/1000"), ("1,000", "1000"),
                                         ("1,234,567.5", "2469135/2"), ("3,14159", "314159/100000")])
def test_decimal_commas_and_thousands(text, value):
    assert str(parse_number(text)) == value


def test_decimal_comma_answers_are_checked_as_numbers():
    assert check_numeric("The answer is \\boxed{1000,99}", "1000.99").correct
    assert check_math("\\boxed{0,5}", "\\frac{1}{2}").correct
    assert not check_numeric("\\boxed{1,000}", "1").correct  # thousands, not a decimal comma


def test_a_final_answer_statement_after_every_box_is_the_answer():
    minerva = "so $x = \\boxed{200}$ at first ... The final answer is $10,455$. I hope it is correct."
    assert extract_math_answer(minerva).answer == "10,455" and check_math(minerva, "10455").correct
    assert extract_math_answer("The final answer is \\boxed{7}. I think the answer is correct.").answer == "7"
