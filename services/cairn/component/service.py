"""Component use cases: create, new versions (upload, update, plugin changes), reads, download.

Every operation first asks `ProjectGateway` whether the caller may do it on the component's
project. Uploads arrive spooled to temporary files (see ingest.py); from there:

1. the WASM is read into memory once and its metadata extracted in a worker thread, and the
   `files` zip is validated: every client mistake is a 400 before anything is counted or stored;
2. a reservation names the upload, its owner, this process and the WASM's future blob key, and
   the upload is counted against the owner's plan under the reservation's id (`UsageLedger`;
   403 over a limit);
3. the initial files go into the blob store under their content hash, and the WASM under a key
   no other version uses;
4. the version record is committed atomically in Redis (store.py), which publishes its event and
   settles the reservation in the same step.

If anything fails after step 2, the new WASM blob is deleted and the counted usage given back,
so a failed or interrupted upload leaves no version and no blob that any version refers to. If the
process dies instead, its lease runs out and another (or its restart) does the same for every
reservation it left (`release_orphans`): plan usage counts committed versions only.
"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from cairn.blobstore import BlobReader, BlobStore, BlobStoreError, BlobTooLarge
from cairn.component import access, metrics
from cairn.component.access import COMPONENT_SERVICE, ProjectGateway, UsageLedger
from cairn.component.model import (
    ComponentType,
    ComponentVersion,
    FilePermissions,
    InitialFile,
    PluginInstallation,
    check_installation,
    parse_component_id,
    parse_installation_id,
)
from cairn.component.store import ComponentGone, ComponentStore, Reservation, VersionConflict
from cairn.component.uploads import (
    DEFAULT_ARCHIVE_LIMITS,
    ArchiveTooLarge,
    InitialFilesArchive,
    UploadError,
)
from cairn.component.wasm import (
    InvalidComponent,
    analyse_component,
    metadata_to_json,
    template_exports_to_json,
)
from cairn.project.service import parse_project_id
from cairn.runtime.archives import ArchiveLimits
from cairn.runtime.errors import (
    AlreadyExists,
    Conflict,
    Internal,
    InvalidRequest,
    LimitExceeded,
    NotFound,
    Unavailable,
)
from cairn.runtime.principal import Principal
from cairn.runtime.timefmt import rfc3339, utc_now

log = structlog.get_logger()

COMPONENT_NOT_FOUND = "Component not found"
WASM_CONTENT_TYPE = "application/wasm"
INITIAL_FILES_PREFIX = "initial-files/"
# Concurrent writers of one component retry on top of each other's versions this often.
_COMMIT_ATTEMPTS = 16
# A component process renews its lease 4 times per lease; a sweep releases the uploads of a
# process whose lease ran out (it died before committing them).
LEASE_SECONDS = 8.0


class ComponentAlreadyExists(AlreadyExists):
    """409: the project already has a component with this name."""

    def __init__(self, component_id: str) -> None:
        super().__init__(f"Component already exists: {component_id}")
        self.component_id = component_id


def size_limit_exceeded(limit: int) -> LimitExceeded:
    """Golem's 403 for an oversized upload, with its doubled prefix (plan service, then
    component service, each wrap the message)."""
    shown = f"{limit // 1_000_000}MB" if limit % 1_000_000 == 0 else f"{limit} bytes"
    return LimitExceeded(
        f"Limit exceeded: Limit Exceeded: Component size limit exceeded (limit: {shown})"
    )


@dataclass(frozen=True)
class WasmUpload:
    """An uploaded WASM binary, spooled to a temporary file the caller deletes afterwards."""

    path: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class FilesUpload:
    """The `files` zip (None when only permissions were sent) and `filesPermissions`."""

    archive: Path | None
    permissions: Mapping[str, FilePermissions] = field(default_factory=dict)


@dataclass(frozen=True)
class _Analysed:
    metadata: dict[str, object]
    template_exports: list[dict[str, object]]


# Up to this size an upload is read into memory for analysis (indexing `bytes` is the fastest
# read); a larger one is mapped instead, so memory holds only the pages the parser touches: it
# skips custom sections and core code by their lengths. Mapped parsing is ~20% slower per byte.
ANALYSE_IN_MEMORY_MAX = 8 << 20


def _analyse_file(path: Path) -> _Analysed:
    """Blocking: extract the WASM's metadata in both API shapes."""
    try:
        with path.open("rb") as file, metrics.METADATA_EXTRACTION_SECONDS.time():
            size = os.fstat(file.fileno()).st_size
            if size > ANALYSE_IN_MEMORY_MAX:
                with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                    metadata = analyse_component(mapped)
            else:
                metadata = analyse_component(file.read())
    except InvalidComponent as err:
        raise InvalidRequest(err.message) from None
    return _Analysed(metadata_to_json(metadata), template_exports_to_json(metadata))


def _load_archive(files: FilesUpload, limits: ArchiveLimits) -> InitialFilesArchive | None:
    """Blocking: validate the zip and hash its files; None when there is no zip."""
    if files.archive is None:
        if files.permissions:
            missing = ", ".join(sorted(files.permissions))
            raise InvalidRequest(
                f"filesPermissions names files that are not in the archive: {missing}"
            )
        return None
    try:
        return InitialFilesArchive.load(files.archive, files.permissions, limits=limits)
    except ArchiveTooLarge as err:
        raise LimitExceeded(err.message) from None
    except UploadError as err:
        raise InvalidRequest(err.message) from None


class ComponentService:
    def __init__(
        self,
        store: ComponentStore,
        blobs: BlobStore,
        projects: ProjectGateway,
        *,
        max_component_bytes: int,
        usage: UsageLedger | None = None,
        instance: str | None = None,
        archive_limits: ArchiveLimits = DEFAULT_ARCHIVE_LIMITS,
    ) -> None:
        self._store = store
        self._blobs = blobs
        self._projects = projects
        # None: no plan limits beyond the size limit (tests without an auth service).
        self._usage = usage
        self.max_component_bytes = max_component_bytes
        # This process, in the reservations of its uploads; its lease says it is alive.
        self.instance = instance or uuid.uuid4().hex
        self._archive_limits = archive_limits

    # -- access ----------------------------------------------------------------------------

    async def _latest_authorized(
        self, caller: Principal, raw_id: str, action: int
    ) -> ComponentVersion:
        """The component's latest version, if it exists and the caller may do `action`."""
        latest = await self._store.latest(parse_component_id(raw_id))
        if latest is None:
            raise NotFound(COMPONENT_NOT_FOUND)
        await self._projects.authorize(caller, latest.project_id, action)
        return latest

    async def _project_for(self, caller: Principal, raw_project_id: str | None) -> str:
        if raw_project_id is None or not raw_project_id.strip():
            return await self._projects.default_project_id(caller)
        return parse_project_id(raw_project_id.strip())

    # -- reads -----------------------------------------------------------------------------

    async def list_components(
        self, caller: Principal, project_id: str | None, name: str | None
    ) -> list[ComponentVersion]:
        """The latest version of the project's components (all, or the one named `name`)."""
        project = await self._project_for(caller, project_id)
        await self._projects.authorize(caller, project, access.VIEW_COMPONENT)
        if name is not None:
            found = await self._store.id_by_name(project, name)
            ids = [] if found is None else [found]
        else:
            ids = await self._store.ids_in_project(project)
        return await self._store.latest_of(ids)

    async def all_versions(self, caller: Principal, component_id: str) -> list[ComponentVersion]:
        latest = await self._latest_authorized(caller, component_id, access.VIEW_COMPONENT)
        return await self._store.all_versions(latest.component_id)

    async def latest(self, caller: Principal, component_id: str) -> ComponentVersion:
        return await self._latest_authorized(caller, component_id, access.VIEW_COMPONENT)

    async def version(
        self, caller: Principal, component_id: str, version: int | None, action: int | None = None
    ) -> ComponentVersion:
        """One version (the latest when `version` is None)."""
        latest = await self._latest_authorized(
            caller, component_id, access.VIEW_COMPONENT if action is None else action
        )
        if version is None or version == latest.version:
            return latest
        found = await self._store.version(latest.component_id, version)
        if found is None:
            raise NotFound(COMPONENT_NOT_FOUND)
        return found

    async def open_wasm(
        self, caller: Principal, component_id: str, version: int | None
    ) -> tuple[ComponentVersion, BlobReader]:
        """The version and its WASM, open for streaming; the caller closes the reader."""
        found = await self.version(caller, component_id, version)
        try:
            return found, await self._blobs.open(found.blob_key)
        except BlobStoreError as err:
            log.error("component_blob_unreadable", key=found.blob_key, error=str(err))
            raise Internal("Internal server error") from None

    # -- uploads ---------------------------------------------------------------------------

    async def create(
        self,
        caller: Principal,
        *,
        project_id: str | None,
        name: str | None,
        component_type: ComponentType | None,
        wasm: WasmUpload,
        files: FilesUpload | None,
    ) -> ComponentVersion:
        if name is None or not name.strip():
            raise InvalidRequest.for_field("componentName", "componentName must not be empty")
        # On disk the spool file becomes the blob: its fsync overlaps the checks and the count.
        self._blobs.prepare_file(wasm.path)
        project = await self._project_for(caller, project_id)
        owner = await self._projects.authorize(caller, project, access.CREATE_COMPONENT)
        # Golem checks the name first: a taken name is a 409 before any work on the binary.
        existing = await self._store.id_by_name(project, name)
        if existing is not None:
            raise ComponentAlreadyExists(existing)
        self._check_size(wasm.size)
        analysed = await asyncio.to_thread(_analyse_file, wasm.path)
        component_id = str(uuid.uuid4())
        with await self._open_archive(files) as archive:
            # Everything the client could get wrong is checked; now count, store and commit.
            # Initial files count at their unpacked size: that is what they occupy once stored.
            size = wasm.size + _unpacked_size(archive)
            reservation = await self._count(
                caller, owner, _blob_key(component_id), components=1, storage=size, upload=size,
            )
            try:
                initial_files = await self._upload_files(archive)
                blob_key = await self._store_wasm(reservation.blob_key, wasm)
                first = ComponentVersion(
                    component_id=component_id,
                    version=0,
                    name=name,
                    project_id=project,
                    owner_account_id=owner,
                    size=wasm.size,
                    sha256=wasm.sha256,
                    blob_key=blob_key,
                    created_at=rfc3339(utc_now()),
                    component_type=component_type or "Durable",
                    metadata=analysed.metadata,
                    template_exports=analysed.template_exports,
                    files=initial_files or (),
                )
                taken_by = await self._store.create(first, reservation=reservation.id)
                if taken_by is not None:
                    raise ComponentAlreadyExists(taken_by)
            except BaseException:
                await asyncio.shield(self._undo(reservation))
                raise
        metrics.UPLOADS.labels("create").inc()
        metrics.UPLOAD_BYTES.inc(wasm.size)
        log.info("component_created", component_id=component_id, project_id=project)
        return first

    async def new_version(
        self,
        caller: Principal,
        component_id: str,
        *,
        component_type: ComponentType | None,
        wasm: WasmUpload,
        files: FilesUpload | None,
        reason: str,
    ) -> ComponentVersion:
        """A new version with a new binary; files are replaced only when `files` is given."""
        self._blobs.prepare_file(wasm.path)  # as in create
        latest = await self._latest_authorized(caller, component_id, access.UPDATE_COMPONENT)
        self._check_size(wasm.size)
        analysed = await asyncio.to_thread(_analyse_file, wasm.path)
        owner = latest.owner_account_id
        with await self._open_archive(files) as archive:
            size = wasm.size + _unpacked_size(archive)
            reservation = await self._count(
                caller, owner, _blob_key(latest.component_id), storage=size, upload=size,
            )
            try:
                new_files = await self._upload_files(archive)
                stored_key = await self._store_wasm(reservation.blob_key, wasm)

                def change(previous: ComponentVersion) -> ComponentVersion:
                    return previous.successor(
                        rfc3339(utc_now()),
                        size=wasm.size,
                        sha256=wasm.sha256,
                        blob_key=stored_key,
                        component_type=component_type or previous.component_type,
                        metadata=analysed.metadata,
                        template_exports=analysed.template_exports,
                        files=previous.files if new_files is None else new_files,
                    )

                committed = await self._commit_next(latest, change, reason, reservation.id)
            except BaseException:
                await asyncio.shield(self._undo(reservation))
                raise
        metrics.UPLOADS.labels("new_version").inc()
        metrics.UPLOAD_BYTES.inc(wasm.size)
        return committed

    def _check_size(self, size: int) -> None:
        if size > self.max_component_bytes:
            raise size_limit_exceeded(self.max_component_bytes)
        if size == 0:
            raise InvalidRequest("The component binary is empty")

    async def _store_wasm(self, key: str, wasm: WasmUpload) -> str:
        """Store the spooled WASM under `key`, a key of its own (on disk: linked, not copied)."""
        try:
            info = await self._blobs.put_file(
                key, wasm.path, size=wasm.size, sha256=wasm.sha256,
                content_type=WASM_CONTENT_TYPE,
            )
        except BlobTooLarge:
            raise Conflict("The uploaded component changed while it was being stored") from None
        except BlobStoreError as err:
            log.error("component_blob_write_failed", key=key, error=str(err))
            raise Unavailable("Blob storage is unavailable") from None
        if info.size != wasm.size or info.sha256 != wasm.sha256:
            await asyncio.shield(self._discard(key))
            raise Conflict("The uploaded component changed while it was being stored")
        return key

    async def _open_archive(self, files: FilesUpload | None) -> contextlib.AbstractContextManager[
        InitialFilesArchive | None
    ]:
        """The validated `files` zip (400 if it is not acceptable, 403 over the size limit),
        to use in a `with`."""
        if files is None:
            return contextlib.nullcontext()
        archive = await asyncio.to_thread(_load_archive, files, self._archive_limits)
        return contextlib.nullcontext() if archive is None else archive

    async def _upload_files(
        self, archive: InitialFilesArchive | None
    ) -> tuple[InitialFile, ...] | None:
        """Store the archive's files under their content hash; None when there is no archive."""
        if archive is None:
            return None
        try:
            uploaded = await archive.upload(self._blobs, key_prefix=INITIAL_FILES_PREFIX)
        except UploadError as err:
            raise InvalidRequest(err.message) from None
        except BlobStoreError as err:
            log.error("initial_files_write_failed", error=str(err))
            raise Unavailable("Blob storage is unavailable") from None
        return tuple(InitialFile(f.key, f.path, f.permissions) for f in uploaded)

    async def _count(
        self, caller: Principal, owner: str, blob_key: str, *, components: int = 0,
        storage: int, upload: int,
    ) -> Reservation:
        """Count an upload against the owner's plan (403 over a limit) before storing it.

        The reservation is written first: if this process dies before the commit, a sweep
        (`release_orphans`) gives the usage back and deletes the blob."""
        if self._usage is None:  # nothing counted: nothing to reserve ('' commits without one)
            return Reservation("", owner, self.instance, blob_key)
        reservation = Reservation(uuid.uuid4().hex, owner, self.instance, blob_key)
        await self._store.reserve(reservation)
        try:
            await self._usage.record(
                caller, owner, components=components, storage_bytes=storage,
                upload_bytes=upload, operation=reservation.id,
            )
        except BaseException:
            await asyncio.shield(self._undo(reservation))
            raise
        return reservation

    async def _undo(self, reservation: Reservation) -> None:
        """After a failed upload: delete its blob and give back the plan usage it counted.

        The monthly upload counter keeps the bytes, as the upload did happen. If the usage
        cannot be given back now, the reservation is left to the next sweep."""
        await self._discard(reservation.blob_key)
        if self._usage is None:
            return
        try:
            await self._usage.cancel(COMPONENT_SERVICE, reservation.owner, reservation.id)
            await self._store.unreserve(reservation.id)
        except Exception as err:
            log.warning("usage_release_deferred", account_id=reservation.owner, error=str(err))
            with contextlib.suppress(Exception):
                await self._store.abandon(reservation)

    async def release_orphans(self) -> int:
        """Give back the usage and delete the blobs of uploads whose process died before their
        commit (or gave up releasing them); how many."""
        if self._usage is None:
            return 0
        orphans = await self._store.orphans(self.instance)
        for reservation in orphans:
            await self._usage.cancel(COMPONENT_SERVICE, reservation.owner, reservation.id)
            await self._discard(reservation.blob_key)
            await self._store.released(reservation.id)
        if orphans:
            log.info("orphan_uploads_released", count=len(orphans))
        return len(orphans)

    async def keep_alive(self, lease_seconds: float = LEASE_SECONDS) -> None:
        """Renew this process's lease and release dead processes' uploads, until cancelled."""
        while True:
            try:
                await self._store.renew_lease(self.instance, lease_seconds)
                await self.release_orphans()
            except Exception as err:  # Redis or auth down: the next round tries again
                log.warning("upload_sweep_failed", error=f"{type(err).__name__}: {err}")
            await asyncio.sleep(lease_seconds / 4)

    async def _discard(self, blob_key: str) -> None:
        try:
            await self._blobs.delete(blob_key)
        except BlobStoreError as err:
            # Unreferenced and under a random key: invisible to the API, only wasted space.
            log.warning("component_blob_cleanup_failed", key=blob_key, error=str(err))

    async def _commit_next(
        self,
        latest: ComponentVersion,
        change: Callable[[ComponentVersion], ComponentVersion],
        reason: str,
        reservation: str = "",
    ) -> ComponentVersion:
        """Commit `change(latest)`, rebuilding on the newer latest if another writer won."""
        previous = latest
        for _ in range(_COMMIT_ATTEMPTS):
            candidate = change(previous)
            try:
                await self._store.add_version(candidate, reason=reason, reservation=reservation)
            except VersionConflict:
                refreshed = await self._store.latest(latest.component_id)
                if refreshed is None:
                    raise NotFound(COMPONENT_NOT_FOUND) from None
                previous = refreshed
                continue
            except ComponentGone:
                raise NotFound(COMPONENT_NOT_FOUND) from None
            log.info(
                "component_version_created",
                component_id=candidate.component_id,
                version=candidate.version,
                reason=reason,
            )
            return candidate
        raise Conflict("Too many concurrent updates of this component; retry")

    # -- plugins ---------------------------------------------------------------------------

    async def installed_plugins(
        self, caller: Principal, component_id: str, version: int | None
    ) -> tuple[PluginInstallation, ...]:
        found = await self.version(
            caller, component_id, version, access.VIEW_COMPONENT
        )
        return found.installed_plugins

    async def install_plugin(
        self,
        caller: Principal,
        component_id: str,
        *,
        name: str | None,
        version: str | None,
        priority: int | None,
        parameters: Mapping[str, str],
    ) -> PluginInstallation:
        check_installation(name, version, priority)
        assert name is not None and version is not None and priority is not None
        latest = await self._store.latest(parse_component_id(component_id))
        if latest is None:
            raise NotFound(COMPONENT_NOT_FOUND)
        # UpdateComponent, and a plugin the project's owner registered for this component.
        await self._projects.authorize_plugin_installation(
            caller, latest.project_id, latest.component_id, name, version
        )
        installation = PluginInstallation(
            str(uuid.uuid4()), name, version, priority, dict(parameters)
        )

        def change(previous: ComponentVersion) -> ComponentVersion:
            return previous.successor(
                rfc3339(utc_now()),
                installed_plugins=(*previous.installed_plugins, installation),
            )

        await self._commit_next(latest, change, "plugin-installed")
        return installation

    async def update_plugin(
        self,
        caller: Principal,
        component_id: str,
        installation_id: str,
        *,
        priority: int | None,
        parameters: Mapping[str, str],
    ) -> None:
        check_installation("-", "-", priority)
        assert priority is not None
        latest = await self._latest_authorized(
            caller, component_id, access.UPDATE_COMPONENT
        )
        wanted = parse_installation_id(installation_id)

        def change(previous: ComponentVersion) -> ComponentVersion:
            plugins = _require_installation(previous, wanted)
            updated = tuple(
                PluginInstallation(p.id, p.name, p.version, priority, dict(parameters))
                if p.id == wanted
                else p
                for p in plugins
            )
            return previous.successor(rfc3339(utc_now()), installed_plugins=updated)

        await self._commit_next(latest, change, "plugin-updated")

    async def uninstall_plugin(
        self, caller: Principal, component_id: str, installation_id: str
    ) -> None:
        latest = await self._latest_authorized(
            caller, component_id, access.UPDATE_COMPONENT
        )
        wanted = parse_installation_id(installation_id)

        def change(previous: ComponentVersion) -> ComponentVersion:
            plugins = _require_installation(previous, wanted)
            remaining = tuple(p for p in plugins if p.id != wanted)
            return previous.successor(rfc3339(utc_now()), installed_plugins=remaining)

        await self._commit_next(latest, change, "plugin-uninstalled")


def _unpacked_size(archive: InitialFilesArchive | None) -> int:
    return 0 if archive is None else sum(f.size for f in archive.files)


def _require_installation(
    version: ComponentVersion, installation_id: str
) -> tuple[PluginInstallation, ...]:
    if not any(p.id == installation_id for p in version.installed_plugins):
        raise NotFound(f"Plugin installation not found: {installation_id}")
    return version.installed_plugins


def _blob_key(component_id: str) -> str:
    """A key no other version uses."""
    return f"components/{component_id}/{uuid.uuid4().hex}.wasm"
