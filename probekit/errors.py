"""The error a person fixes by changing what they typed: imports nothing, so every command
(and ``probekit --help``) can use it without paying for torch."""

from __future__ import annotations


class UsageError(ValueError):
    """A bad argument or input: reported in one line (exit status 2 in the CLI), naming the
    argument, file or line and what was expected."""
