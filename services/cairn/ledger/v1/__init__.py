"""Generated gRPC code of the ledger service (`make proto`); only this file is committed."""
