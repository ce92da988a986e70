"""What goes out of the study (PROTOCOL 8): listings and the SDTM AE domain.

- ``tabular``: one listing written three ways from the same columns and rows: CSV
  (streamed), XLSX (constant memory) and PDF (laid out by cellstudy.pdf, which every PDF
  of the app shares: one header, footer and static-only URL fetcher).
- ``sdtm``: the CDISC SDTM AE domain mapping (pure); its variables are documented in
  ``docs/sdtm_ae.md``.

Neither module touches the database: views query the rows (site-scoped) and hand them
over as an iterable of dicts.
"""
