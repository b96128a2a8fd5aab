"""Packages: DAR uploads into the blob store and Redis, the in-process engine, template ids.

An upload is validated and decoded completely before anything is written, so a bad DAR changes
nothing. The DAR and each package's DALF payload (whose SHA-256 is the package id) go to the blob
store first; the Redis index is written last, so other replicas never see a package whose blobs
are missing. Each process keeps one `Engine` whose decoded packages are reused by every command;
a template id it cannot resolve makes it pick up packages other replicas uploaded meanwhile.

Template ids resolve like the JSON API up to SDK 2.8: `<package id>:<module>:<entity>` exactly,
`<module>:<entity>` only when exactly one loaded package defines that template.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import defaultdict
from dataclasses import dataclass

from cairn.blobstore.errors import BlobNotFound
from cairn.blobstore.port import BlobReader, BlobStore, iter_bytes, read_bytes
from cairn.ledger.codec import JsonCodec
from cairn.ledger.lf.ast import Identifier, Package
from cairn.ledger.lf.dar import DAR_LIMITS, Dar, DarError, load_dar
from cairn.ledger.lf.engine import Engine
from cairn.ledger.store import LedgerStore
from cairn.runtime.archives import ArchiveLimits
from cairn.runtime.errors import InvalidRequest, NotFound

PACKAGE_ID_LENGTH = 64


def dar_blob_key(digest: str) -> str:
    return f"ledger/dars/{digest}.dar"


def dalf_blob_key(package_id: str) -> str:
    return f"ledger/packages/{package_id}.dalf"


@dataclass(frozen=True)
class TemplateRef:
    """A template id as a client wrote it: optional package id, module and entity."""

    package_id: str | None
    module: str
    entity: str

    def __str__(self) -> str:
        prefix = f"{self.package_id}:" if self.package_id else ""
        return f"{prefix}{self.module}:{self.entity}"


def parse_template_ref(text: object) -> TemplateRef:
    """`[<package id>:]<module>:<entity>`; InvalidRequest for anything else."""
    parts = text.split(":") if isinstance(text, str) else []
    if len(parts) == 3 and all(parts):
        return TemplateRef(parts[0], parts[1], parts[2])
    if len(parts) == 2 and all(parts):
        return TemplateRef(None, parts[0], parts[1])
    shown = text if isinstance(text, str) else repr(text)
    raise InvalidRequest(f"Expected JsString([<packageId>:]<module>:<entity>), got: {shown}")


def template_id_text(template_id: Identifier) -> str:
    """The fully qualified form the JSON API always answers with."""
    return f"{template_id.package_id}:{template_id.module}:{template_id.name}"


class PackageRegistry:
    """The packages this ledger knows: uploads, listing, DALF downloads and id resolution."""

    def __init__(self, store: LedgerStore, blobs: BlobStore, max_dar_bytes: int,
                 dar_limits: ArchiveLimits = DAR_LIMITS) -> None:
        self._store = store
        self._blobs = blobs
        self._max_dar_bytes = max_dar_bytes
        self._dar_limits = dar_limits
        self.engine = Engine()
        self.codec = JsonCodec(self.engine.packages)
        # (module, entity) -> ids of the loaded packages that define that template.
        self._templates: dict[tuple[str, str], set[str]] = defaultdict(set)
        self._refresh_lock = asyncio.Lock()

    # ------------------------------------------------------------------ loading
    def _add_packages(self, packages: dict[str, Package]) -> None:
        for package_id, package in packages.items():
            if package_id in self.engine.packages.packages:
                continue
            self.engine.packages.add(package)
            for module in package.modules.values():
                for name in module.templates:
                    self._templates[(module.name, name)].add(package_id)

    async def upload(self, data: bytes) -> Dar:
        """Validate, store and load a DAR. Uploading the same DAR again changes nothing."""
        if not data:
            raise InvalidRequest("Invalid DAR: the request body is empty")
        if len(data) > self._max_dar_bytes:
            raise InvalidRequest(
                f"Invalid DAR: {len(data)} bytes exceeds the limit of {self._max_dar_bytes}")
        try:
            # Decoding a large DAR takes a while; keep the event loop serving other calls.
            dar = await asyncio.to_thread(load_dar, data, self._dar_limits)
        except DarError as err:
            raise InvalidRequest(str(err)) from None
        dar_key = dar_blob_key(hashlib.sha256(data).hexdigest())
        if not await self._blobs.exists(dar_key):
            await self._blobs.put(dar_key, iter_bytes(data))
        for package_id, package in dar.packages.items():
            key = dalf_blob_key(package_id)
            if not await self._blobs.exists(key):
                await self._blobs.put(key, iter_bytes(package.payload))
        await self._store.add_packages(dar_key, [dar.main_package_id, *sorted(dar.packages)])
        self._add_packages(dar.packages)
        return dar

    async def refresh(self) -> None:
        """Load the packages other replicas uploaded since this process last looked."""
        async with self._refresh_lock:
            known = self.engine.packages.packages
            missing = [p for p in await self._store.package_ids() if p not in known]
            if not missing:
                return
            dars = await self._store.dars_of(missing)
            for dar_key in sorted(set(dars.values())):
                try:
                    data = await read_bytes(self._blobs, dar_key, max_size=self._max_dar_bytes)
                except BlobNotFound:
                    # Redis and the blob store disagree: most likely another blob location.
                    raise RuntimeError(
                        f"the package index in Redis names {dar_key}, which the blob store does "
                        f"not have; check CAIRN_BLOB_DIR / CAIRN_S3_* match the other "
                        f"replicas") from None
                try:
                    dar = await asyncio.to_thread(load_dar, data)
                except DarError as err:  # it was valid when uploaded: the blob is damaged
                    raise RuntimeError(f"stored DAR {dar_key} no longer loads: {err}") from err
                self._add_packages(dar.packages)

    # ------------------------------------------------------------------ reads
    async def package_ids(self) -> list[str]:
        return await self._store.package_ids()

    async def open_dalf(self, package_id: str) -> BlobReader:
        """The DALF payload of a known package; NotFound otherwise."""
        if len(package_id) != PACKAGE_ID_LENGTH or await self._store.dar_of(package_id) is None:
            raise NotFound(f"Package not found: {package_id}")
        try:
            return await self._blobs.open(dalf_blob_key(package_id))
        except BlobNotFound:
            raise NotFound(f"Package not found: {package_id}") from None

    # ------------------------------------------------------------------ template ids
    def _lookup(self, ref: TemplateRef) -> Identifier | None:
        if ref.package_id is not None:
            ident = Identifier(ref.package_id, ref.module, ref.entity)
            return ident if self.engine.packages.find_template(ident) is not None else None
        owners = self._templates.get((ref.module, ref.entity), set())
        if len(owners) != 1:  # unknown, or ambiguous between packages
            return None
        return Identifier(next(iter(owners)), ref.module, ref.entity)

    async def resolve(self, ref: TemplateRef) -> Identifier | None:
        """The template `ref` names, loading packages uploaded elsewhere on a miss."""
        found = self._lookup(ref)
        if found is None:
            await self.refresh()
            found = self._lookup(ref)
        return found
