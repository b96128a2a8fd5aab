"""Settings only the ledger service reads (beyond `cairn.runtime.settings`), from the environment.

| variable | default | meaning |
|---|---|---|
| `CAIRN_LEDGER_ID` | `MyLedger` | the ledger id tokens must name (when they name one) |
| `CAIRN_LEDGER_AUTH`, `_JWT_*`, `_JWKS_*` | `sandbox` | token checks (`cairn.auth.ledger_jwt`) |
| `CAIRN_BLOB_DIR` | `<CAIRN_RUN_DIR>/blobs` | blob directory (when no `CAIRN_S3_ENDPOINT` is set) |
| `CAIRN_LEDGER_MAX_DAR_BYTES` | `67108864` | largest DAR accepted by `POST /v1/packages` |
| `CAIRN_LEDGER_MAX_DAR_UNPACKED_BYTES` | `268435456` | most a DAR may unpack to |
| `CAIRN_LEDGER_MAX_DAR_ENTRIES` | `10000` | most entries a DAR's zip may have |
| `CAIRN_LEDGER_MAX_DAR_RATIO` | `500` | most an entry over 1 MiB may inflate (unpacked / packed) |
| `CAIRN_LEDGER_LOG_MAX_TRANSACTIONS` | `100000` | transactions the log keeps (0: no limit) |
| `CAIRN_LEDGER_LOG_MAX_AGE_SECONDS` | `0` | age at which transactions leave the log (0: none) |
| `CAIRN_LEDGER_PRUNE_INTERVAL_SECONDS` | `60` | how often a replica applies the retention |
| `CAIRN_LEDGER_QUERY_STORE_MAX_CONTRACTS` | `0` | payloads kept in memory (0: all) |
| `CAIRN_LEDGER_CONSISTENCY_TIMEOUT_SECONDS` | `10` | longest wait of a read for the query store |
| `CAIRN_LEDGER_MAX_DEDUPLICATION_SECONDS` | `86400` | longest (and default) deduplication period |
| `CAIRN_LEDGER_INLINE_MAX_CALLS` | `400` | engine calls of a small command on the loop (0: none) |

Details in docs/ledger-service.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cairn.auth.ledger_jwt import LedgerTokenPolicy
from cairn.blobstore.factory import blob_store_from_env
from cairn.blobstore.metered import metered
from cairn.blobstore.port import BlobStore
from cairn.ledger.feed import Retention
from cairn.ledger.lf.dar import DAR_LIMITS
from cairn.ledger.service import DEFAULT_INLINE_MAX_CALLS
from cairn.ledger.store import DEFAULT_MAX_DEDUPLICATION_SECONDS
from cairn.runtime.archives import ArchiveLimits

DEFAULT_MAX_DAR_BYTES = 64 << 20
DEFAULT_CONSISTENCY_TIMEOUT_SECONDS = 10.0


def _number(env: Mapping[str, str], name: str, default: float, *, integer: bool,
            positive: bool = False) -> float:
    raw = env.get(name, "")
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        value = -1
    if value < 0 or (positive and value == 0):
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{name} must be {kind} {'> 0' if positive else '>= 0'}, got {raw!r}")
    return value


@dataclass(frozen=True)
class LedgerSettings:
    tokens: LedgerTokenPolicy = field(default_factory=LedgerTokenPolicy)
    max_dar_bytes: int = DEFAULT_MAX_DAR_BYTES
    blob_env: Mapping[str, str] = field(default_factory=dict)
    retention: Retention = field(default_factory=Retention)
    query_store_max_contracts: int = 0
    consistency_timeout_seconds: float = DEFAULT_CONSISTENCY_TIMEOUT_SECONDS
    max_deduplication_seconds: int = DEFAULT_MAX_DEDUPLICATION_SECONDS
    dar_limits: ArchiveLimits = DAR_LIMITS
    inline_max_calls: int = DEFAULT_INLINE_MAX_CALLS

    @property
    def ledger_id(self) -> str:
        return self.tokens.ledger_id

    def blob_store(self) -> BlobStore:
        """S3 when `CAIRN_S3_ENDPOINT` is set, else the blob directory on local disk."""
        return metered(blob_store_from_env(self.blob_env))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, run_dir: Path | None = None
                 ) -> LedgerSettings:
        env = os.environ if env is None else env
        # Only the blob store's own variables: the settings object must not carry secrets.
        blob_env = {k: v for k, v in env.items()
                    if k.startswith("CAIRN_S3_") or k == "CAIRN_BLOB_DIR"}
        if not blob_env.get("CAIRN_BLOB_DIR"):
            blob_env["CAIRN_BLOB_DIR"] = str((run_dir or Path(".run")) / "blobs")
        defaults = Retention()
        retention = Retention(
            max_transactions=int(_number(env, "CAIRN_LEDGER_LOG_MAX_TRANSACTIONS",
                                         defaults.max_transactions, integer=True)),
            max_age_seconds=_number(env, "CAIRN_LEDGER_LOG_MAX_AGE_SECONDS",
                                    defaults.max_age_seconds, integer=False),
            prune_interval_seconds=_number(env, "CAIRN_LEDGER_PRUNE_INTERVAL_SECONDS",
                                           defaults.prune_interval_seconds, integer=False,
                                           positive=True),
        )
        return cls(
            tokens=LedgerTokenPolicy.from_env(env),
            max_dar_bytes=int(_number(env, "CAIRN_LEDGER_MAX_DAR_BYTES", DEFAULT_MAX_DAR_BYTES,
                                      integer=True)),
            blob_env=blob_env,
            retention=retention,
            query_store_max_contracts=int(_number(env, "CAIRN_LEDGER_QUERY_STORE_MAX_CONTRACTS",
                                                  0, integer=True)),
            consistency_timeout_seconds=_number(env, "CAIRN_LEDGER_CONSISTENCY_TIMEOUT_SECONDS",
                                                DEFAULT_CONSISTENCY_TIMEOUT_SECONDS,
                                                integer=False, positive=True),
            max_deduplication_seconds=int(_number(env, "CAIRN_LEDGER_MAX_DEDUPLICATION_SECONDS",
                                                  DEFAULT_MAX_DEDUPLICATION_SECONDS,
                                                  integer=True, positive=True)),
            dar_limits=ArchiveLimits(
                max_total_size=int(_number(env, "CAIRN_LEDGER_MAX_DAR_UNPACKED_BYTES",
                                           DAR_LIMITS.max_total_size, integer=True,
                                           positive=True)),
                max_entries=int(_number(env, "CAIRN_LEDGER_MAX_DAR_ENTRIES",
                                        DAR_LIMITS.max_entries, integer=True, positive=True)),
                max_ratio=int(_number(env, "CAIRN_LEDGER_MAX_DAR_RATIO", DAR_LIMITS.max_ratio,
                                      integer=True, positive=True)),
            ),
            inline_max_calls=int(_number(env, "CAIRN_LEDGER_INLINE_MAX_CALLS",
                                         DEFAULT_INLINE_MAX_CALLS, integer=True)),
        )
