"""The user errors of every command: a message a user can act on, and exit code 2.

`UserError` is the base of every such error (the config's `ConfigError`, the data layer's `DataError`, the
command lines' `UsageError`), so `src/cli.py` catches them all while importing nothing but this layer.
"""

from __future__ import annotations

EXIT_CONFIG_ERROR = 2  # bad usage, config or data: nothing started (src/cli.py lists every exit code)
EXIT_FAILED = 3  # a failure while running, reported with its traceback
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as a shell reports a command it interrupted
EXIT_TERMINATED = 143  # stopped by SIGTERM (128 + 15): a scheduler's stop, `timeout`, `kill`


class UserError(Exception):
    """An error a user fixes in a config, a data file or an argument: exit 2 with its message, no traceback."""


class UsageError(UserError):
    """A bad argument or input a user can fix: exit 2 with the message, no traceback. (Defined here, in the
    lowest layer, so a data tool's checks can raise it; `src.cli` re-exports it.)"""


class ConfigError(UserError):
    """A bad configuration. `str(err)` names the file, the key or line, the value and what is allowed.

    Several problems found in one pass are joined into one error so the user fixes them at once.
    """

    def __init__(self, problems: str | list[str]):
        from .excerpt import bounded

        self.problems = [problems] if isinstance(problems, str) else list(problems)
        # Bounded whatever the input: each problem cut at 4,000 characters, at most MAX_SHOWN of them.
        shown = [bounded(p) for p in self.problems[:MAX_SHOWN]]
        if len(self.problems) > MAX_SHOWN:
            shown.append(f"... and {len(self.problems) - MAX_SHOWN:,} more problem(s) of the same run")
        super().__init__("\n".join(shown))


MAX_SHOWN = 50  # problems a ConfigError shows (all stay in `problems`)
