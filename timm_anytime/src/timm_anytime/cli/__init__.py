"""The console scripts: ``anytime-train``, ``anytime-eval``, ``anytime-report``, ``anytime-push``, ``anytime-queue``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from ..train.checkpoint import CheckpointError

#: Errors caused by the user's input: reported in one line, without a traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, CheckpointError, ImportError, FloatingPointError)


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with each flag's default, except where the help already says it in words
    ("(default: the run's)") or the default is None (the flag is off unless given)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or "(default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def run(prog: str, main: Callable[[], None]) -> int:
    """Run ``main``; print a user error as ``prog: error: ...`` and return exit status 2 (1 for NaN)."""
    try:
        main()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 1 if isinstance(error, FloatingPointError) else 2
    return 0
