"""DAR loading: validate the zip and its manifest, check package hashes, decode every DALF.

A DAR is a zip with `META-INF/MANIFEST.MF` naming the main DALF (`Main-Dalf`) and all DALFs
(`Dalfs`). Each DALF is a protobuf `Archive {hash_function=1, payload=3, hash=4}` whose
package id is the lowercase hex SHA-256 of the raw payload bytes; the payload is an
`ArchivePayload {daml_lf_1=2, minor=3, daml_lf_2=4, patch=5}`.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass, field

from cairn.ledger.lf.ast import Package
from cairn.ledger.lf.decode import DecodeError, decode_package
from cairn.ledger.lf.wire import Msg, WireError
from cairn.runtime.archives import ZIP_ERRORS, ArchiveLimits, ArchiveRefused, check_directory
from cairn.runtime.errors import quote

# The range Cairn promises (LF 1.6-1.15: what Daml 2.x SDKs emit). 1.17 decodes with the same
# schema, but its upgrade semantics are not implemented, so it is refused rather than half-run;
# 1.16 is declared broken upstream; 1.dev and LF 2.x use other wire formats and semantics.
SUPPORTED_LF_MINORS = ("6", "7", "8", "11", "12", "13", "14", "15")
SUPPORTED_LF_TEXT = "1.6, 1.7, 1.8, 1.11, 1.12, 1.13, 1.14, 1.15"
MAX_DAR_BYTES = 256 * 1024 * 1024
# Bounds on the zip (`CAIRN_LEDGER_MAX_DAR_*`), so a small DAR cannot expand without limit.
DAR_LIMITS = ArchiveLimits(max_total_size=256 << 20)

# Decoded packages, shared by every DAR that contains them (a package id names its content).
_PACKAGE_CACHE: dict[str, Package] = {}


class DarError(ValueError):
    """The DAR (or one of its DALFs) cannot be accepted; the message is fit for an API client."""


@dataclass(frozen=True)
class Dar:
    """A loaded DAR: its main package id and every package it contains, by id."""

    main_package_id: str
    packages: dict[str, Package]
    sdk_version: str | None = None
    manifest: dict[str, str] = field(default_factory=dict)

    @property
    def main_package(self) -> Package:
        return self.packages[self.main_package_id]


def parse_manifest(text: str) -> dict[str, str]:
    """Parse a Java manifest: `Key: value` lines, continuation lines start with one space."""
    entries: dict[str, str] = {}
    last_key: str | None = None
    for raw_line in text.replace("\r\n", "\n").split("\n"):
        if not raw_line:
            last_key = None
            continue
        if raw_line.startswith(" ") and last_key is not None:
            entries[last_key] += raw_line[1:]
            continue
        key, sep, value = raw_line.partition(":")
        if not sep:
            raise DarError(f"Invalid DAR manifest line: {quote(raw_line)!r}")
        last_key = key.strip()
        entries[last_key] = value.strip()
    return entries


def decode_dalf(data: bytes, *, where: str = "DALF") -> Package:
    """Decode one DALF (an `Archive` message), checking its hash and LF version."""
    try:
        archive = Msg(data)
        payload = archive.raw(3)
        declared_hash = archive.string(4)
    except WireError as exc:
        raise DarError(f"{where} is not a valid Daml-LF archive: {exc}") from None
    if not payload:
        raise DarError(f"{where} is not a valid Daml-LF archive: empty payload")
    package_id = hashlib.sha256(payload).hexdigest()
    if declared_hash != package_id:
        raise DarError(f"{where}: package hash mismatch: archive declares "
                       f"{quote(declared_hash)!r} but the SHA-256 of its payload is {package_id}")
    cached = _PACKAGE_CACHE.get(package_id)
    if cached is not None:
        return cached
    try:
        archive_payload = Msg(payload)
        minor = archive_payload.string(3)
        has_lf1 = archive_payload.has(2)
        has_lf2 = archive_payload.has(4)
    except WireError as exc:
        raise DarError(f"{where}: malformed archive payload of package {package_id}: "
                       f"{exc}") from None
    version = f"2.{minor}" if has_lf2 else f"1.{minor}"
    if not has_lf1 or minor not in SUPPORTED_LF_MINORS:
        raise DarError(f"Unsupported Daml-LF version {version} in package {package_id} "
                       f"({where}); supported versions: {SUPPORTED_LF_TEXT}")
    try:
        package = decode_package(package_id, payload, archive_payload.raw(2), minor)
    except (DecodeError, WireError) as exc:
        raise DarError(f"{where}: invalid Daml-LF package {package_id}: {exc}") from None
    except (ValueError, ArithmeticError, IndexError, KeyError, TypeError) as exc:
        # Malformed input that slipped past the structural checks: still the client's DAR.
        raise DarError(f"{where}: invalid Daml-LF package {package_id}: "
                       f"{type(exc).__name__}: {exc}") from None
    _PACKAGE_CACHE[package_id] = package
    return package


def load_dar(data: bytes, limits: ArchiveLimits = DAR_LIMITS) -> Dar:
    """Validate and decode a DAR. Raises `DarError` with a client-facing message.

    Any damage to the zip (a flipped bit, a truncation) is a DarError, never another exception:
    the caller answers 400 and stores nothing.
    """
    if len(data) > MAX_DAR_BYTES:
        raise DarError(f"DAR is too large ({len(data)} bytes; limit {MAX_DAR_BYTES})")
    try:
        return _load_zip(data, limits)
    except DarError:
        raise
    except ZIP_ERRORS as exc:
        raise DarError(f"Invalid DAR: the archive is damaged ({quote(str(exc))})") from None


def _load_zip(data: bytes, limits: ArchiveLimits) -> Dar:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise DarError("Invalid DAR: not a zip archive") from None
    with archive:
        try:
            check_directory(archive.infolist(), limits)
        except ArchiveRefused as exc:
            raise DarError(f"Invalid DAR: {exc}") from None
        names = set(archive.namelist())
        if "META-INF/MANIFEST.MF" not in names:
            raise DarError("Invalid DAR: missing META-INF/MANIFEST.MF")
        try:
            manifest = parse_manifest(archive.read("META-INF/MANIFEST.MF").decode("utf-8"))
        except UnicodeDecodeError:
            raise DarError("Invalid DAR: META-INF/MANIFEST.MF is not UTF-8") from None
        if manifest.get("Format", "daml-lf") != "daml-lf":
            raise DarError(f"Invalid DAR: unsupported format {quote(manifest['Format'])!r}")
        main = manifest.get("Main-Dalf")
        if not main:
            raise DarError("Invalid DAR: manifest has no Main-Dalf entry")
        dalfs = [name.strip() for name in manifest.get("Dalfs", "").split(",") if name.strip()]
        if main not in dalfs:
            dalfs.insert(0, main)
        packages: dict[str, Package] = {}
        main_id = None
        for name in dalfs:
            if name not in names:
                raise DarError(f"Invalid DAR: manifest lists {quote(name)} but the archive "
                               f"lacks it")
            package = decode_dalf(archive.read(name), where=quote(name))
            packages[package.package_id] = package
            if name == main:
                main_id = package.package_id
    assert main_id is not None
    return Dar(main_id, packages, manifest.get("Sdk-Version"), manifest)
