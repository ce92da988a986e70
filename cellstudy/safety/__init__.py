"""The safety pages across features (PROTOCOL 6, 8; issue 4): the AE, SAE and DLT listings,
the summaries by dose level, the CRS/ICANS summary and the SDTM AE domain, with their
filters, queries and exports. Above the clinical features: they read adverse events,
infusions and subjects together."""
