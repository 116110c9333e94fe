"""Deterministic multi-step arithmetic word problems with step-by-step solutions.

A problem is a start value and a chain of operations told as a short story; the solution computes one
operation per step ("12 + 5 = 17"), steps separated by a blank line (the PRM step format), and ends with
the answer in ``\\boxed{}``. Difficulty is the number of operations and the size of the numbers.

Held-out split: a problem belongs to the test set iff a hash of its text falls in the test bucket, so no
seed or generation order can put a test problem into training data. Verifier training data: solutions
with one corrupted step (a wrong result, carried forward), labelled per step (good before the error, bad
from it on).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

NAMES = ("Ana", "Ben", "Cleo", "Dan", "Eva", "Finn", "Gus", "Hana", "Ivy", "Jon", "Kai", "Lea", "Max", "Nia", "Omar",
         "Pia")
ITEMS = ("apples", "coins", "books", "stamps", "shells", "pens", "cards", "marbles", "cookies", "stickers")
TEST_BUCKETS = 5  # one bucket in five is held out


@dataclass(frozen=True)
class Difficulty:
    min_steps: int = 2
    max_steps: int = 3
    max_start: int = 20
    max_operand: int = 9
    allow_multiply: bool = False


@dataclass(frozen=True)
class ArithProblem:
    question: str
    steps: tuple[str, ...]  # reasoning steps, the last one states the boxed answer
    answer: int

    @property
    def solution(self) -> str:
        return "\n\n".join(self.steps)

    @property
    def held_out(self) -> bool:
        return is_held_out(self.question)


def is_held_out(question: str) -> bool:
    return int(hashlib.sha256(question.encode()).hexdigest(), 16) % TEST_BUCKETS == 0


def _operation(rng: random.Random, value: int, difficulty: Difficulty) -> tuple[str, int]:
    choices = ["+", "-"] + (["*"] if difficulty.allow_multiply and value <= 20 else [])
    operator = rng.choice(choices)
    if operator == "-" and value == 0:
        operator = "+"
    if operator == "+":
        operand = rng.randint(1, difficulty.max_operand)
    elif operator == "-":
        operand = rng.randint(1, min(value, difficulty.max_operand))
    else:
        operand = rng.randint(2, 3)
    return operator, operand


_TELLING = {
    "+": ("gets {n} more", "finds {n} more", "is given {n} more"),
    "-": ("gives away {n}", "loses {n}", "uses {n}"),
    "*": ("then has {n} times as many",),
}


def make_problem(rng: random.Random, difficulty: Difficulty = Difficulty()) -> ArithProblem:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    value = rng.randint(1, difficulty.max_start)
    clauses, steps = [], []
    for _ in range(rng.randint(difficulty.min_steps, difficulty.max_steps)):
        operator, operand = _operation(rng, value, difficulty)
        result = {"+": value + operand, "-": value - operand, "*": value * operand}[operator]
        clauses.append(rng.choice(_TELLING[operator]).format(n=operand))
        steps.append(f"{value} {operator} {operand} = {result}")
        value = result
    question = f"{name} has {steps[0].split()[0]} {item}. {name} " + ", then ".join(clauses) + f". How many {item} now?"
    steps.append(f"The answer is \\boxed{{{value}}}")
    return ArithProblem(question, tuple(steps), value)


def problems(seed: int, count: int, held_out: bool, difficulty: Difficulty = Difficulty()) -> list[ArithProblem]:
    """``count`` distinct problems of one split (test if ``held_out``), in a fixed order for a seed."""
    rng = random.Random(seed)
    seen: set[str] = set()
    found: list[ArithProblem] = []
    attempts = 0
    while len(found) < count:
        attempts += 1
        if attempts > 200 * count + 10000:
            raise ValueError(f"cannot find {count} distinct problems at {difficulty}")
        problem = make_problem(rng, difficulty)
        if problem.held_out != held_out or problem.question in seen:
            continue
        seen.add(problem.question)
        found.append(problem)
    return found


def _apply(a: int, operator: str, b: int) -> int:
    return {"+": a + b, "-": a - b, "*": a * b}[operator]


def step_result(step: str, carried: int | None) -> tuple[int, str, str]:
    """Where a step's written result starts, the written result, and the result the step's own numbers
    give (for the answer step: the value carried from the step before). What a verifier checks."""
    if step.startswith("The answer is"):
        start = step.index("{") + 1
        return start, step[start:-1], str(carried)
    left, written = step.split(" = ")
    a, operator, b = left.split()
    return len(left) + 3, written, str(_apply(int(a), operator, int(b)))


def step_results(steps: Sequence[str]) -> Iterator[tuple[int, str, str]]:
    """``step_result`` of each step in turn, each written result carried into the next step (so a step is
    judged on the numbers it was given, and the answer step against the last written result)."""
    carried = None
    for step in steps:
        offset, written, expected = step_result(step, carried)
        carried = int(written)
        yield offset, written, expected


def _with_errors(problem: ArithProblem, wrong: set[int], rng: random.Random) -> list[str]:
    """The solution recomputed with the results of the steps in ``wrong`` off by 1-3, carried forward."""
    steps, value = [], None
    for index, step in enumerate(problem.steps[:-1]):
        left = step.split(" = ")[0]
        a, operator, b = left.split()
        a = int(a) if value is None else value
        value = _apply(a, operator, int(b)) + (rng.choice([-3, -2, -1, 1, 2, 3]) if index in wrong else 0)
        steps.append(f"{a} {operator} {b} = {value}")
    steps.append(f"The answer is \\boxed{{{value}}}")
    return steps


def corrupt(problem: ArithProblem, rng: random.Random) -> tuple[list[str], list[int]]:
    """A wrong solution: one step's result is off, the error is carried forward. Labels per step: 1 good, 0 bad."""
    wrong_at = rng.randrange(len(problem.steps) - 1)
    steps = _with_errors(problem, {wrong_at}, rng)
    return steps, [1] * wrong_at + [0] * (len(steps) - wrong_at)


def corrupt_each_step(problem: ArithProblem, rng: random.Random, probability: float) -> list[str]:
    """A solution whose every step's result is off with ``probability``, each error carried forward:
    verifier training data with many wrong steps, also after an earlier one (``corrupt`` has one)."""
    wrong = {index for index in range(len(problem.steps) - 1) if rng.random() < probability}
    return _with_errors(problem, wrong, rng)
