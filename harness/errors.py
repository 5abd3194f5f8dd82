"""User-facing errors.

Anything raised as :class:`HarnessError` is a user mistake or an environment
problem; the CLI prints its message on one line and exits non-zero without a
traceback. Everything else is a bug and keeps its traceback.
"""


class HarnessError(Exception):
    """An error the user can fix; the message says what and how."""

    exit_code = 2
