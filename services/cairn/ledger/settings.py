"""Settings only the ledger service reads (beyond `cairn.runtime.settings`), from the environment.

| variable | default | meaning |
|---|---|---|
| `CAIRN_LEDGER_ID` | `MyLedger` | the ledger id tokens must name (when they name one) |
| `CAIRN_LEDGER_AUTH`, `_JWT_*`, `_JWKS_*` | `sandbox` | token checks (`cairn.auth.ledger_jwt`) |
| `CAIRN_BLOB_DIR` | `<CAIRN_RUN_DIR>/blobs` | blob directory (when no `CAIRN_S3_ENDPOINT` is set) |
| `CAIRN_LEDGER_MAX_DAR_BYTES` | `67108864` | largest DAR accepted by `POST /v1/packages` |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cairn.auth.ledger_jwt import LedgerTokenPolicy
from cairn.blobstore.factory import blob_store_from_env
from cairn.blobstore.port import BlobStore

DEFAULT_MAX_DAR_BYTES = 64 << 20


@dataclass(frozen=True)
class LedgerSettings:
    tokens: LedgerTokenPolicy = field(default_factory=LedgerTokenPolicy)
    max_dar_bytes: int = DEFAULT_MAX_DAR_BYTES
    blob_env: Mapping[str, str] = field(default_factory=dict)

    @property
    def ledger_id(self) -> str:
        return self.tokens.ledger_id

    def blob_store(self) -> BlobStore:
        """S3 when `CAIRN_S3_ENDPOINT` is set, else the blob directory on local disk."""
        return blob_store_from_env(self.blob_env)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, run_dir: Path | None = None
                 ) -> LedgerSettings:
        env = os.environ if env is None else env
        # Only the blob store's own variables: the settings object must not carry secrets.
        blob_env = {k: v for k, v in env.items()
                    if k.startswith("CAIRN_S3_") or k == "CAIRN_BLOB_DIR"}
        if not blob_env.get("CAIRN_BLOB_DIR"):
            blob_env["CAIRN_BLOB_DIR"] = str((run_dir or Path(".run")) / "blobs")
        raw_max = env.get("CAIRN_LEDGER_MAX_DAR_BYTES", "")
        try:
            max_dar_bytes = int(raw_max) if raw_max else DEFAULT_MAX_DAR_BYTES
        except ValueError:
            raise ValueError(f"CAIRN_LEDGER_MAX_DAR_BYTES must be an integer, got {raw_max!r}"
                             ) from None
        return cls(LedgerTokenPolicy.from_env(env), max_dar_bytes, blob_env)
