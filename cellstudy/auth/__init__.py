"""Users, log-in, roles and the one site-scoping helper (policy.py)."""

from .. import registry

registry.register(registry.RecordType("user", "User account"))
