"""The ``harness`` command: one module per command group, each only parsing, calling the
library and printing.

Only argparse is imported at start-up; each command imports what it needs when it runs, so
``harness --help`` stays fast (torch, s3prl and speechbrain are heavy).
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
import threading
from typing import Callable, Sequence

from harness.cli import analyze, corpus, reports, run, train, upstreams

#: errno values of a storage that refuses writes (full, read-only, quota, permission)
STORAGE_ERRORS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM}

#: command groups in the order ``harness --help`` lists them
GROUPS = (corpus, upstreams, run, train, reports, analyze)


def build_parser() -> argparse.ArgumentParser:
    """The whole ``harness`` parser: each group module adds its commands."""
    from harness import __version__

    parser = argparse.ArgumentParser(prog="harness",
                                     description="Which layer of a speech model should you use for a task, and why.")
    parser.add_argument("--version", action="version", version=f"harness {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    return parser


class Terminated(BaseException):
    """SIGTERM reached the harness's main process (a scheduler's or a user's kill)."""


def _on_sigterm(main_pid: int) -> Callable:
    def handler(signum, frame) -> None:
        if os.getpid() != main_pid:  # a forked worker (DataLoader, corpus synthesis): leave quietly
            os._exit(128 + signal.SIGTERM)
        raise Terminated()
    return handler


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command, return its exit status (errors: one line)."""
    from harness.errors import HarnessError
    from harness.quiet import quiet_third_party

    quiet_third_party()
    # Lightning's own SIGTERM handling ends fit() with a SystemExit of code 0, so a killed run
    # looked successful; ours runs too (Lightning chains handlers it finds) and ends with 143.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm(os.getpid()))

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        # `harness` or `harness corpus` alone: show the relevant help
        target = parser
        if args.command:
            target = next(a for a in parser._subparsers._group_actions[0].choices.values()
                          if a.prog.endswith(args.command))
        target.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except HarnessError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("harness: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except Terminated:
        print("harness: terminated (SIGTERM); re-run the same command to resume", file=sys.stderr)
        return 128 + signal.SIGTERM
    except BrokenPipeError:
        # the reader went away (`harness upstreams | head`): as for any Unix filter, stop quietly;
        # stdout goes to /dev/null so the interpreter's final flush raises nothing either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except OSError as exc:
        if exc.errno not in STORAGE_ERRORS or os.environ.get("HARNESS_DEBUG") == "1":
            raise
        # a full disk, a read-only or forbidden folder: every writer replaces files atomically, so
        # nothing half-written is left, and re-running resumes once there is room
        where = f" {exc.filename}" if exc.filename else ""
        print(f"harness: error: cannot write{where}: {exc.strerror or exc}; free space or choose a writable location, "
              "then re-run the same command", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
