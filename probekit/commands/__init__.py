"""Analysis subcommands of ``probekit``: one module per command.

Each module defines ``register(subparsers)``, which adds its parser and sets
``handler=fn(args) -> int`` with ``set_defaults``. Modules import nothing heavy at the top
(``probekit --help`` imports all of them); the handler imports what it needs. Raise
:class:`probekit.errors.UsageError` (or ``ValueError``) for a bad argument: the CLI prints one line
and exits 2.
"""
