"""The one error type the CLI turns into a single line and exit code 2."""


class UsageError(Exception):
    """Bad user input (flag, config, checkpoint, dataset). Raised before anything is written."""
