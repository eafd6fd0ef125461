"""longctx: long-context extension and RULER evaluation for hybrid language models."""

import time as _time

__version__ = "0.1.0"
STARTED = _time.time()  # when the process imported longctx: the start of its startup time (metrics' startup_s)
