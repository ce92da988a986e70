"""PDF case report forms, casebooks and listings (issue 5)."""
