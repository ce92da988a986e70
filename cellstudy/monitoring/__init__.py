"""Monitoring and record integrity (issue 6): queries, source data verification,
signatures and locks. `state.record_state` is the contract other packages read."""

from .. import registry

for _name, _label in (("query", "Query"), ("casebook", "Casebook")):
    registry.register(registry.RecordType(_name, _label))

from . import write_path  # noqa: E402,F401  (serves the write path's lock, SDV and query hooks)
