"""Errors a RULER runner reports instead of a score."""


class DataUnavailable(RuntimeError):
    """A task's source data (essays, SQuAD, HotpotQA) cannot be had here: the task is
    reported unavailable, never scored 0."""


class LengthTooShort(ValueError):
    """The target length leaves no room for the prompt, its needles and the generation."""
