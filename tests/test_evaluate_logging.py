"""lm-eval's log handler, set up once per process on the stderr of that moment, follows stderr to the next
evaluation in the same process (a notebook, tests, in-process commands) instead of writing to a closed one."""

from __future__ import annotations

import io
import logging

from longctx.evaluate.lm_eval_setup import log_to_current_stderr


def test_lm_eval_logs_reach_the_stderr_of_now(capsys):
    old = io.StringIO()
    handler = logging.StreamHandler(old)
    logger = logging.getLogger("lm_eval")
    logger.addHandler(handler)
    try:
        old.close()  # the stderr an earlier evaluation had
        log_to_current_stderr()
        logger.warning("reaches the stderr of now")
        err = capsys.readouterr().err
        assert "reaches the stderr of now" in err and "Logging error" not in err
    finally:
        logger.removeHandler(handler)
