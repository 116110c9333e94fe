"""Answer checkers under hostile model text: bounded time in any thread, no exception on any string, number
forms normalised, and majority keys that never merge different expressions."""

import threading
import time

import pytest

from lm_eval_moe.scoring import CHECKERS, check_aime, check_math, check_numeric, equivalence, majority_key
from lm_eval_moe.scoring.extract import extract_choice, extract_math_answer, last_boxed

#: texts built to make backtracking regexes or repeated scans blow up (each well under a response's size)
PATHOLOGICAL = {
    "answer_spaces": "answer" + " " * 5000,
    "answer_spaces_is": "answer" + " " * 5000 + "is" + " " * 5000,
    "many_answer_words": "answer " * 5000,
    "answer_colons": "the answer is" + ":" * 20000,
    "answer_stars": "answer is " + "*" * 20000 + "x",
    "option_spaces": "option" + " " * 5000 + "(A" + " " * 5000,
    "unclosed_boxes": "\\boxed{" * 10000,
    "boxed_spaces": "\\boxed" + " " * 20000,
    "digits": "1" * 100000,
    "digit_spaces": "1 " + " " * 50000 + "/",
    "dots": "1." * 50000,
    "text_braces": "\\boxed{" + "\\text{" * 5000 + "}",
    "stars_then_dot": "Final Answer: " + "*" * 20000 + "." * 20000,
    "many_boxes": "\\boxed{1}, " * 20000,
    "box_gaps": ("\\boxed{1}" + "a" * 79 + "1") * 5000,
    "box_gap_words": ("\\boxed{1}" + " ab" * 26) * 5000,
    "final_answers": "\\boxed{1} " + "The final answer is " * 5000,
    "decimal_commas": "1," * 50000 + "5",
}


@pytest.mark.parametrize("name", sorted(PATHOLOGICAL))
def test_extraction_is_linear_on_pathological_text(name):
    text = PATHOLOGICAL[name]
    start = time.perf_counter()
    extract_math_answer(text)
    extract_choice(text)
    last_boxed(text)
    for check in CHECKERS.values():
        check(text, "7")
    check_math(text, "1, 2")  # a gold of several parts: the final boxes are read as one answer
    assert time.perf_counter() - start < 2.0, name


HOSTILE_ANSWERS = [
    "1e400", "-1e400", "1e999999999", "9" * 400, "9" * 5000, "1" * 5000 + ".5", "0." + "0" * 5000 + "1",
    "\\frac{" + "9" * 5000 + "}{7}", "1/" + "0" * 10, "\\frac{1}{0}", "nan", "inf", "-inf", "1e-999999999",
    "\x00", "\ud800", "🙂", "", " ", "{" * 1000, "}" * 1000, "\\" * 1000, "$" * 1000, "," * 1000,
    "1,000,000,000,000,000,000,000,000,000,000,000", "9^{9^{9}}", "10^{10^{10}}",
]


@pytest.mark.parametrize("answer", HOSTILE_ANSWERS, ids=range(len(HOSTILE_ANSWERS)))
def test_no_checker_raises_on_any_answer(answer, monkeypatch):
    monkeypatch.setattr(equivalence, "MATH_VERIFY_TIMEOUT_S", 1.0)  # the bound is what is tested, not its size
    text = f"We conclude.\n\nThe final answer is $\\boxed{{{answer}}}$."
    for name, check in CHECKERS.items():
        for gold in ("7", "12", "\\frac{1}{2}", "B"):
            if name in ("numeric", "aime") and gold in ("\\frac{1}{2}", "B"):
                continue
            verdict = check(text, gold)
            assert isinstance(verdict.correct, bool)
        majority_key(answer)


def test_huge_numbers_compare_right():
    assert check_numeric("\\boxed{1e400}", "1e400").correct
    assert not check_numeric("\\boxed{1e400}", "7").correct
    assert check_numeric("\\boxed{" + "9" * 400 + "}", "9" * 400).correct
    assert not check_numeric("\\boxed{" + "9" * 400 + "}", "9" * 399).correct
    assert not check_aime("\\boxed{" + "9" * 5000 + "}", "999").correct
    assert not check_math("\\boxed{" + "9" * 5000 + "}", "9").correct


@pytest.mark.parametrize("minus", ["\u2212", "\u2012", "\u2013", "\ufe63", "\uff0d"])
def test_unicode_minus_is_a_minus(minus):
    for check in (check_numeric, check_math):
        assert check(f"\\boxed{{{minus}5}}", "-5").correct, (check.__name__, minus)
        assert not check(f"\\boxed{{{minus}5}}", "5").correct, (check.__name__, minus)
    assert check_numeric(f"The answer is {minus}5.", "-5").correct
    assert majority_key(f"{minus}5") == majority_key("-5") != majority_key("5")


def test_fullwidth_digits_read_as_digits():
    assert check_numeric("\\boxed{４２}", "42").correct
    assert check_aime("\\boxed{０４２}", "42").correct


@pytest.mark.parametrize("expression", ["\\sqrt{2}", "x^2", "2\\pi", "2^{10}", "\\log 2", "2x", "e^2", "2!"])
def test_majority_keys_never_merge_an_expression_with_its_number(expression):
    assert majority_key(expression) != majority_key("2")
    assert majority_key(expression) != majority_key("10")
    assert not check_numeric(f"\\boxed{{{expression}}}", "2").correct


def test_units_and_separators_still_read_as_numbers():
    assert majority_key("18 dollars") == majority_key("18") == majority_key("\\$18") == majority_key("18.0")
    assert check_numeric("\\boxed{1,000}", "1000").correct and check_numeric("\\boxed{18\\text{ apples}}", "18").correct


@pytest.mark.parametrize("in_thread", [False, True], ids=["main_thread", "worker_thread"])
def test_math_check_time_bound_holds_in_any_thread(in_thread):
    """sympy evaluating a tower of powers runs in C: a signal-based bound cannot stop it in the main thread."""
    results = []

    def run():
        start = time.perf_counter()
        results.append((check_math("\\boxed{9^{9^{9}}}", "3^{2 \\cdot 9^{9}}"), time.perf_counter() - start))

    if in_thread:
        thread = threading.Thread(target=run)
        thread.start()
        thread.join(60)
        assert not thread.is_alive()
    else:
        run()
    verdict, seconds = results[0]
    assert seconds < 15, seconds
    assert isinstance(verdict.correct, bool)
