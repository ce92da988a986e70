"""CDISC ODM 1.3.2 export of the study (issue 15, PROTOCOL 8): docs/odm.md.

- ``metadata``: the study metadata read off the form registry, with its stable OIDs (pure).
- ``writer``: ``write_odm(out, sites=..., mode=..., granularity=...)``, streamed with lxml's
  incremental writer.
- ``job``: the whole study as a background job (cellstudy.jobs), ``routes``: the pages and the
  one-subject download, ``cli``: ``flask odm export``.
"""

from ... import registry

registry.register(registry.RecordType("odm", "ODM export"))
