"""The ledger service: a DAML-compatible ledger over its own DAML-LF engine."""
