"""lm-eval task folders of longctx. Pass TASKS_DIR to `lm_eval --include_path`."""

from pathlib import Path

TASKS_DIR = str(Path(__file__).resolve().parent)
