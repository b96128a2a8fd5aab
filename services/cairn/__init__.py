"""Cairn: a Golem-compatible control plane and a DAML-compatible ledger, served over gRPC and Envoy REST."""
