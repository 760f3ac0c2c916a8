"""The ``personalens`` command line."""

from personalens.cli.main import main

__all__ = ["main"]
