"""The public API for check authors: `from grader.checks import plot_curves, untrained, ...`.

It lives in grader.checker.checks, beside the rest of the trusted checker. This is the name that
assignments and docs import, and it stays: the two names are one module object."""

import sys

from grader.checker import checks

sys.modules[__name__] = checks
