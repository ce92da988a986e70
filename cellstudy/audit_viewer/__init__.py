"""The audit trail viewer (issue 6): per field, form, subject, site and study."""
