"""Settings of the component service only, read once from the environment by its __main__.

The shared settings (ports, Redis, secrets) are `cairn.runtime.settings.Settings`; these add the
upload size limit, where uploads are spooled while they arrive, and the blob store. The blob store
is S3 (MinIO) when `CAIRN_S3_ENDPOINT` is set, otherwise a directory (`CAIRN_BLOB_DIR`, default
`<CAIRN_RUN_DIR>/blobs`), so `make run` needs nothing external.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cairn.blobstore import BlobStore, blob_store_from_env
from cairn.blobstore.metered import metered
from cairn.component.uploads import (
    DEFAULT_ARCHIVE_LIMITS,
    DEFAULT_MAX_PARTS,
    DEFAULT_MAX_TEXT_PART_SIZE,
    FormLimits,
)
from cairn.runtime.archives import ArchiveLimits
from cairn.runtime.envvars import positive_int

# Golem's hard per-upload limit: 50 MB (decimal, as Golem's plan_limit.rs checks it).
DEFAULT_MAX_COMPONENT_BYTES = 50_000_000
# Golem's default plan allows 500 MB of storage per account; an initial-files zip cannot need more.
DEFAULT_MAX_FILES_ARCHIVE_BYTES = 500_000_000


@dataclass(frozen=True)
class ComponentSettings:
    """The component service's own knobs (documented in docs/component-service.md)."""

    max_component_bytes: int = DEFAULT_MAX_COMPONENT_BYTES
    max_files_archive_bytes: int = DEFAULT_MAX_FILES_ARCHIVE_BYTES
    archive_limits: ArchiveLimits = DEFAULT_ARCHIVE_LIMITS
    form_limits: FormLimits = FormLimits()
    # None: the system's temporary directory.
    spool_dir: Path | None = None
    blob_env: Mapping[str, str] | None = None

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, run_dir: Path = Path(".run")
    ) -> ComponentSettings:
        """Read the CAIRN_COMPONENT_* variables; blobs default to `<run_dir>/blobs`."""
        env = os.environ if env is None else env
        spool = env.get("CAIRN_COMPONENT_SPOOL_DIR", "").strip()
        blob_env = dict(env)
        if not blob_env.get("CAIRN_S3_ENDPOINT") and not blob_env.get("CAIRN_BLOB_DIR"):
            blob_env["CAIRN_BLOB_DIR"] = str(run_dir / "blobs")
        return cls(
            max_component_bytes=positive_int(
                env, "CAIRN_COMPONENT_MAX_BYTES", DEFAULT_MAX_COMPONENT_BYTES
            ),
            max_files_archive_bytes=positive_int(
                env, "CAIRN_COMPONENT_MAX_FILES_BYTES", DEFAULT_MAX_FILES_ARCHIVE_BYTES
            ),
            archive_limits=ArchiveLimits(
                max_total_size=positive_int(
                    env, "CAIRN_COMPONENT_MAX_FILES_UNPACKED_BYTES",
                    DEFAULT_ARCHIVE_LIMITS.max_total_size,
                ),
                max_entries=positive_int(
                    env, "CAIRN_COMPONENT_MAX_FILES_ENTRIES", DEFAULT_ARCHIVE_LIMITS.max_entries
                ),
                max_ratio=positive_int(
                    env, "CAIRN_COMPONENT_MAX_FILES_RATIO", DEFAULT_ARCHIVE_LIMITS.max_ratio
                ),
            ),
            form_limits=FormLimits(
                max_parts=positive_int(env, "CAIRN_COMPONENT_MAX_FORM_PARTS", DEFAULT_MAX_PARTS),
                max_text_part_size=positive_int(
                    env, "CAIRN_COMPONENT_MAX_FORM_FIELD_BYTES", DEFAULT_MAX_TEXT_PART_SIZE
                ),
            ),
            spool_dir=Path(spool) if spool else None,
            blob_env=blob_env,
        )

    def blob_store(self) -> BlobStore:
        """S3 when CAIRN_S3_ENDPOINT is set, else the disk directory."""
        return metered(blob_store_from_env(self.blob_env or {}))
