"""The study's cached steps, in one namespace: world -> base -> tuned model -> evaluation.

Each step lives in its own module and declares the modules its cached build
runs (`SOURCES`), so an edit re-does only what it can change:

- `bases`: the base model (kind "base"): world, models, tuning, bases;
- `sets`: the instruction sets (no artifact of their own);
- `tuned`: the tuned model (kind "tuned"): the above plus data, sets, tuned;
- `evaluation`: the base's probe and answers and a tuned model's metrics
  (kinds "base_probe", "base_answers", "evaluation", "icl_shift", "training_fit"): the above plus metrics,
  evaluation.

Chapters do not import this module: they call `experiments`, which reads these
steps' results.
"""

from __future__ import annotations

from .bases import (CHECKPOINT_FRACTIONS, BaseSpec, base_folder, base_is_built, base_spec, build_base,
                    checkpoint_epochs, load_base, normal_epoch, pretrain_log, tokenizer_texts)
from .evaluation import (ICL_SHOTS, JUDGEMENTS, MAX_NEW_TOKENS, answer_record, base_answers, base_probe, evaluate,
                         icl_prefix, icl_shift, most_similar_person, position_records, probe, response_roles, token_budget)
from .sets import FILE_HELDOUT, SET_KINDS, SetSpec, eval_questions, file_example, file_set_spec, file_split, make_set
from .tuned import load_tuned, train_log, tune, tune_params

__all__ = ["BaseSpec", "CHECKPOINT_FRACTIONS", "FILE_HELDOUT", "ICL_SHOTS", "JUDGEMENTS", "MAX_NEW_TOKENS",
           "SET_KINDS", "SetSpec", "answer_record", "base_answers", "base_folder", "base_is_built", "base_probe",
           "base_spec", "build_base", "checkpoint_epochs", "eval_questions", "evaluate", "file_example",
           "file_set_spec", "file_split", "icl_prefix", "icl_shift", "load_base", "load_tuned", "make_set",
           "most_similar_person", "normal_epoch", "position_records", "pretrain_log", "probe", "response_roles",
           "token_budget", "tokenizer_texts", "train_log", "tune", "tune_params"]
