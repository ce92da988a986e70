"""Adverse events: its case report forms are declared in crfs.py (issue 12), registered when the package loads."""

from . import crfs  # noqa: F401
