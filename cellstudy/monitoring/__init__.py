"""Monitoring and record integrity (issue 6): queries, source data verification,
signatures and locks. `state.record_state` is the contract other packages read."""
