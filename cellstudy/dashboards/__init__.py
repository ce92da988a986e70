"""The monitor and data-manager dashboards (issue 6)."""
