"""Answer extraction and equivalence on forms that models really write."""

import threading

import pytest

from lm_eval_moe.scoring import check_aime, check_math, check_numeric, choice_checker, sample_metrics
from lm_eval_moe.scoring.bounded import CheckTimeout, call_bounded
from lm_eval_moe.scoring.extract import extract_choice, extract_math_answer, last_boxed


def boxed(answer: str) -> str:
    return f"Some reasoning.\n\nSo the final answer is $\\boxed{{{answer}}}$."


@pytest.mark.parametrize(
    "gold, written",
    [
        ("\\frac{1}{2}", "0.5"),
        ("\\frac{1}{2}", "\\dfrac{1}{2}"),
        ("\\frac{1}{2}", "1/2"),
        ("\\frac{14}{3}", "\\tfrac{14}{3}"),
        ("10", "10\\text{ cm}"),
        ("10", "10 \\text{ meters}"),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\frac{\\pi}{2})"),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "\\left(3,\\pi/2\\right)"),
        ("(-\\infty, 2]", "(-\\infty,2]"),
        ("[-2, 7)", "[-2,7)"),
        ("\\{1,2,3\\}", "\\{3, 2, 1\\}"),
        ("\\begin{pmatrix} 1 \\\\ -2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\-2\\end{pmatrix}"),
        ("90^\\circ", "90"),
        ("90", "90^\\circ"),
        ("90^\\circ", "90^{\\circ}"),
        ("10\\%", "10\\%"),
        ("10\\%", "10"),
        ("2220", "2,220"),
        ("1000000", "1,000,000"),
        ("3\\sqrt{13}", "\\sqrt{117}"),
        ("\\text{Evelyn}", "\\text{Evelyn}"),
        ("\\text{Evelyn}", "Evelyn"),
        ("6 - 5i", "6-5i"),
        ("x^3+3x-6", "x^3 + 3x - 6"),
        ("-\\frac{\\pi}{6}", "-\\pi/6"),
    ],
)
def test_math_equivalent_forms_are_accepted(gold, written):
    assert check_math(boxed(written), gold).correct


@pytest.mark.parametrize(
    "gold, written",
    [
        ("10\\%", "0.1"),  # ref/100
        ("0.1", "10\\%"),  # ref*100
        ("10", "1000"),
        ("10", "0.1"),
        ("(-\\infty, 2]", "(-\\infty, 2)"),
        ("\\frac{1}{2}", "\\frac{1}{3}"),
        ("3\\sqrt{13}", "3\\sqrt{12}"),
        ("\\{1,2,3\\}", "\\{1,2\\}"),
        ("\\text{Evelyn}", "\\text{Bob}"),
    ],
)
def test_math_different_answers_are_rejected(gold, written):
    assert not check_math(boxed(written), gold).correct


def test_last_box_counts_and_nested_braces():
    assert last_boxed("\\boxed{3} then \\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert check_math("First I thought \\boxed{3}, but actually \\boxed{5}.", "5").correct
    assert not check_math("\\boxed{5} was wrong, the answer is \\boxed{3}", "5").correct
    assert last_boxed("\\boxed{\\left\\{1,2\\right\\}}") == "\\left\\{1,2\\right\\}"
    assert last_boxed("\\fbox{7}") == "7" and last_boxed("\\boxed 7.") == "7."
    assert last_boxed("\\boxed{unclosed") is None


@pytest.mark.parametrize(
    "text, expected, method",
    [
        ("Thus the answer is 42.", "42", "answer_phrase"),
        ("**Final Answer:** $\\frac{3}{4}$", "\\frac{3}{4}", "answer_phrase"),
        ("We get 3 apples, then 5 more, total 8", "8", "last_number"),
        ("The answer is **5**.", "5", "answer_phrase"),
        ("no digits at all", None, "none"),
    ],
)
def test_math_fallbacks(text, expected, method):
    extracted = extract_math_answer(text)
    assert (extracted.answer, extracted.method) == (expected, method)


@pytest.mark.parametrize(
    "written, gold, correct",
    [
        ("18", "18", True),
        ("\\$18", "18", True),
        ("18 dollars", "18", True),
        ("18.00", "18", True),
        ("1,450,000", "1,450,000", True),
        ("1450000", "1,450,000", True),
        ("1450001", "1,450,000", False),
        ("0.5", "0.5", True),
        ("\\frac{1}{2}", "0.5", True),
        ("50\\%", "50", True),
        ("0.5", "50", False),  # ref/100 is never accepted
        ("5000", "50", False),  # ref*100 is never accepted
        ("x = 7", "7", True),
        ("-3", "-3", True),
    ],
)
def test_numeric_rules(written, gold, correct):
    assert check_numeric(boxed(written), gold).correct is correct


@pytest.mark.parametrize(
    "written, gold, correct",
    [("045", "45", True), ("45", "45", True), ("45.0", "45", True), ("1045", "45", False), ("44.5", "45", False)],
)
def test_aime_integers(written, gold, correct):
    assert check_aime(boxed(written), gold).correct is correct


def test_aime_rejects_out_of_range_gold():
    with pytest.raises(ValueError, match="not an integer 0..999"):
        check_aime(boxed("5"), "1000")


@pytest.mark.parametrize(
    "text, letter",
    [
        ("A is tempting, but B fits. The answer is (C).", "C"),
        ("Answer: B", "B"),
        ("Considering all options... \\boxed{D}", "D"),
        ("\\boxed{\\text{(B)}}", "B"),
        ("The answer is (A). Wait, re-checking: the answer is (D).", "D"),
        ("**Answer: C**", "C"),
        ("I believe that A Boy is ... therefore\n\n(B)", "B"),
        ("A quick look: nothing conclusive.", None),
        ("The answer is (E).", None),  # only A-D exist
    ],
)
def test_choice_takes_the_last_explicit_statement(text, letter):
    assert extract_choice(text, 4).answer == letter


def test_choice_not_fooled_by_first_capital_letter():
    check = choice_checker(4)
    assert not check("A careful reading shows the answer is (B).", "A").correct
    assert check("A careful reading shows the answer is (B).", "B").correct


def test_sample_metrics_majority_precision_coverage():
    verdicts = [check_numeric(boxed(x), "7") for x in ["7", "8", "8", "7", "7"]]
    metrics = sample_metrics(verdicts[1], verdicts, independent=False)
    assert metrics == {"exact_match": 0.0, "coverage": 1.0, "precision": 0.6, "num_candidates": 5.0}
    independent = sample_metrics(verdicts[1], verdicts, independent=True)
    assert independent["pass@1"] == pytest.approx(0.6) and independent["maj@5"] == 1.0
    none = [check_numeric("no answer", "7")] * 2
    assert sample_metrics(none[0], none, independent=True)["maj@2"] == 0.0


def test_checks_are_safe_from_threads():
    results = []

    def worker():
        results.append(check_math(boxed("\\sqrt{117}"), "3\\sqrt{13}").correct)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert results == [True, True, True]


def _spin(seconds: float) -> str:
    import time

    end = time.time() + seconds
    while time.time() < end:
        pass
    return "done"


def test_bounded_calls_time_out_in_main_thread_and_in_threads():
    with pytest.raises(CheckTimeout):
        call_bounded(_spin, (5.0,), 0.2)
    assert call_bounded(_spin, (0.0,), 2.0) == "done"
    outcome = []

    def worker():
        try:
            call_bounded(_spin, (30.0,), 1.0)
            outcome.append("finished")
        except CheckTimeout:
            outcome.append("timeout")

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(timeout=60)
    assert outcome == ["timeout"]
