"""longctx.results under the name scripts import it by: the same module object, so patches to either apply to both."""

import sys

from longctx import results

sys.modules[__name__] = results
