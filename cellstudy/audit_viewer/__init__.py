"""The audit trail viewer (issue 6): per field, form, subject, site and study."""

from .. import registry

registry.register(registry.RecordType("audit_trail", "Audit trail"))
