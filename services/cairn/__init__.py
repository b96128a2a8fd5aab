"""Cairn: a Golem-compatible control plane and a DAML-compatible ledger, over gRPC and REST."""
