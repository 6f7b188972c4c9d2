"""The ``probekit`` command: the parser and the dispatch.

Every subcommand lives in ``probekit/commands/<name>.py`` with ``register(subparsers)``, which
adds its parser and sets ``handler=fn(args) -> int``. Start-up stays fast: nothing heavy is
imported at the top of any of them, so ``probekit --help`` never pays for ``torch`` or
``transformer_lens``; each handler imports what it needs. Bad arguments exit with status 2 and
one line saying what was wrong.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from probekit.errors import UsageError

__all__ = ["COMMAND_MODULES", "UsageError", "main"]

#: Subcommands defined in ``probekit/commands/<name>.py``, in ``--help`` order.
COMMAND_MODULES = (
    "info",
    "cache",
    "audit",
    "ablate",
    "grid",
    "modularity",
    "shatter",
    "choose",
    "report",
    "train",
    "demo",
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one clear line, not usage + error
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="probekit",
        description="Load trained transformers and RNNs, cache their activations, analyse, report.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(f"probekit.commands.{name}").register(sub)
    for command in sub.choices.values():
        command.add_argument(
            "--progress",
            action="store_true",
            help="progress bars even when stderr is not a terminal (a log file, CI)",
        )
        command.add_argument(
            "--self-contained",
            action="store_true",
            help="report pages embed plotly.js (one file to hand on) instead of sharing "
            "plotly.min.js beside them",
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.progress:
        os.environ["PROBEKIT_PROGRESS"] = "1"
    if args.self_contained:
        os.environ["PROBEKIT_SELF_CONTAINED"] = "1"
    try:
        return int(args.handler(args) or 0)
    except (ValueError, TypeError, OSError, KeyError) as err:
        # UsageError is a ValueError: every bad argument or input ends here, in one line, as
        # do a full disk or a missing permission (OSError).
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"probekit {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"probekit {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
