"""Writes the 57 MMLU-redux subtask YAMLs and the group file (run after changing the template)."""

from pathlib import Path

from lm_eval_moe.scoring.metrics import REPORTED_K

SUBJECTS = (
    "abstract_algebra anatomy astronomy business_ethics clinical_knowledge college_biology college_chemistry "
    "college_computer_science college_mathematics college_medicine college_physics computer_security "
    "conceptual_physics econometrics electrical_engineering elementary_mathematics formal_logic global_facts "
    "high_school_biology high_school_chemistry high_school_computer_science high_school_european_history "
    "high_school_geography high_school_government_and_politics high_school_macroeconomics "
    "high_school_mathematics high_school_microeconomics high_school_physics high_school_psychology "
    "high_school_statistics high_school_us_history high_school_world_history human_aging human_sexuality "
    "international_law jurisprudence logical_fallacies machine_learning management marketing medical_genetics "
    "miscellaneous moral_disputes moral_scenarios nutrition philosophy prehistory professional_accounting "
    "professional_law professional_medicine professional_psychology public_relations security_studies "
    "sociology us_foreign_policy virology world_religions"
).split()

SUBTASK = """# MMLU-redux 2.0, {subject}: questions annotated ok only; generative, letter in \\\\boxed{{}}.
include: _moe_mmlu_redux_template.yaml
task: moe_mmlu_redux_{subject}
dataset_name: {subject}
dataset_kwargs:
  benchmark: mmlu_redux
  subject: {subject}
"""

GROUP_METRICS = ["exact_match", "coverage", "precision"] + [f"{name}@{k}" for name in ("pass", "maj") for k in REPORTED_K]


def group_metrics() -> str:
    lines = "".join(f"  - {{metric: {metric}, aggregation: mean, weight_by_size: true}}\n" for metric in GROUP_METRICS)
    return f"aggregate_metric_list:\n{lines}metadata:\n  version: 1.0\n"


def main() -> None:
    folder = Path(__file__).parent
    assert len(SUBJECTS) == 57
    for subject in SUBJECTS:
        (folder / f"moe_mmlu_redux_{subject}.yaml").write_text(SUBTASK.format(subject=subject))
    tasks = "".join(f"  - moe_mmlu_redux_{subject}\n" for subject in SUBJECTS)
    (folder / "moe_mmlu_redux.yaml").write_text(
        "# MMLU-redux 2.0 (edinburgh-dawg/mmlu-redux-2.0, error_type == ok), 57 subjects.\n"
        f"group: moe_mmlu_redux\ntask:\n{tasks}{group_metrics()}"
    )


if __name__ == "__main__":
    main()
