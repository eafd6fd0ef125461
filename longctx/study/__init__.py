"""`longctx study`: a hybrid-vs-transformer long-context study, run stage by stage through the longctx CLI.

stage.py        Stage, the stage kinds, StudyError / OutOfTime
schema.py       the study YAML's sections as dataclasses, each checking its fields
load.py         reading a study file (`base:` overlays), its checks, pretraining units, variants, extra runs
run_configs.py  the pretraining and extension run configs the stages train with
plan.py         the stages, in study order, and the --only selection
state.py        done / resume / new, from what a stage left on disk
gate.py         the retrieval gate and its summary at the top of results.md
runner.py       running stages as `python -m longctx ...` subprocesses (--jobs, --devices, --time-budget)
study_cmd.py    the command line
"""

from longctx.study.gate import gate_check, gate_file, gate_misses, gate_scores, gate_summary
from longctx.study.load import (
    added_temperature,
    budget_entry,
    extra_runs,
    merge,
    overlay,
    parse_study,
    pretrain_seeds,
    read_study,
    seed_entry,
    units,
    variant,
)
from longctx.study.plan import plan, select
from longctx.study.run_configs import extend_config, load_study, model_fields, pretrain_config, write_configs
from longctx.study.runner import GRACE_S, STOP_SIGNAL, run_stage, run_stages
from longctx.study.stage import KINDS, OutOfTime, Stage, StudyError
from longctx.study.state import eval_done, status, train_done

__all__ = [
    "GRACE_S",
    "KINDS",
    "STOP_SIGNAL",
    "OutOfTime",
    "Stage",
    "StudyError",
    "budget_entry",
    "eval_done",
    "extend_config",
    "added_temperature",
    "extra_runs",
    "gate_check",
    "gate_file",
    "gate_misses",
    "gate_scores",
    "gate_summary",
    "load_study",
    "merge",
    "model_fields",
    "overlay",
    "parse_study",
    "plan",
    "pretrain_config",
    "pretrain_seeds",
    "read_study",
    "run_stage",
    "run_stages",
    "seed_entry",
    "select",
    "status",
    "train_done",
    "units",
    "variant",
    "write_configs",
]
