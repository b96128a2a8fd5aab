"""DAR loading and DAML-LF decoding against the SDK-compiled DARs in the shared fixtures."""

from __future__ import annotations

import contextlib
import hashlib
import io
import random
import re
import zipfile
from pathlib import Path

import pytest

from cairn.ledger.lf import dar as dar_module
from cairn.ledger.lf.ast import PrimType, TBuiltin, TNat
from cairn.ledger.lf.dar import Dar, DarError, decode_dalf, load_dar, parse_manifest
from cairn.ledger.lf.decode import DecodeError
from cairn.runtime.archives import ArchiveLimits
from tests.damage import damaged

SUPPORTED_DARS = [
    "test-1.6.dar", "test-1.7.dar", "test-1.8.dar", "test-1.11.dar", "test-1.12.dar",
    "test-1.13.dar", "test-1.14.dar", "test-1.15.dar",
    "model-tests-1.15.dar", "semantic-tests-1.15.dar", "benchtool-tests-1.15.dar",
    "TestingTypes-1_0_0-sdk_0_13_36-lf_1_6.dar", "TestingTypes-1_0_0-sdk_1_0_0-lf_1_8.dar",
    "TestingTypes-1_0_0-sdk_1_12_0-lf_1_11.dar", "TestingTypes-1_6_0-sdk_1_15_0-lf_1_13.dar",
    "dd-0.0.1-sdk-2.3.0-lf-1.14.dar", "dd-0.0.1-sdk-2.4.0-lf-1.15.dar",
    "dummy-daml-app-0.0.1-sdk_1_3_0-lf_1_8.dar",
]


def _load(fixtures: Path, name: str) -> Dar:
    return load_dar((fixtures / "daml" / name).read_bytes())


TemplateIndex = dict[str, tuple[bool, set[str]]]


def _expected_templates(fixtures: Path, dar_name: str) -> tuple[str, TemplateIndex]:
    """Main package id and templates (key flag, choices) listed in templates.txt."""
    text = (fixtures / "daml" / "templates.txt").read_text()
    section = text.split(f"== {dar_name} ", 1)[1].split("\n== ", 1)[0]
    lines = section.splitlines()
    package_id = lines[0].rsplit(" id ", 1)[1].strip()
    templates: TemplateIndex = {}
    for line in lines[1:]:
        match = re.match(r"\s+(\S+)( KEY)?(?: impl=\d+)? : ?(.*)$", line)
        if match:
            choices = {c.strip().lstrip("~") for c in match[3].split(",") if c.strip()}
            templates[match[1]] = (match[2] is not None, choices)
    return package_id, templates


@pytest.mark.parametrize("dar_name", SUPPORTED_DARS)
def test_supported_dars_load_and_match_the_template_index(shared_fixtures: Path,
                                                          dar_name: str) -> None:
    dar = _load(shared_fixtures, dar_name)
    package_id, expected = _expected_templates(shared_fixtures, dar_name)
    assert dar.main_package_id == package_id
    decoded = {
        f"{module.name}:{name}": (template.key is not None, set(template.choices))
        for module in dar.main_package.modules.values()
        for name, template in module.templates.items()
    }
    assert decoded == expected


def test_package_ids_are_sha256_of_payloads(shared_fixtures: Path) -> None:
    data = (shared_fixtures / "daml" / "model-tests-1.15.dar").read_bytes()
    dar = load_dar(data)
    assert len(dar.packages) == 29
    for package in dar.packages.values():
        assert hashlib.sha256(package.payload).hexdigest() == package.package_id
    versions = {p.lf_version for p in dar.packages.values()}
    # Compiled DARs mix non-interned LF 1.6 dependencies with interned 1.14/1.15 packages.
    assert {"1.6", "1.14", "1.15"} <= versions
    assert dar.main_package.name == "model-tests"
    assert dar.main_package.version == "1.0.0"


def test_iou_model_is_decoded_with_types_and_choices(shared_fixtures: Path) -> None:
    dar = _load(shared_fixtures, "model-tests-1.15.dar")
    module = dar.main_package.modules["Iou"]
    iou = module.data_types["Iou"]
    assert iou.kind == "record"
    assert iou.field_names() == ("issuer", "owner", "currency", "amount", "observers")
    assert iou.fields[3][1] == TBuiltin(PrimType.NUMERIC, (TNat(10),))
    template = module.templates["Iou"]
    assert template.precondition is not None
    assert template.choices["Iou_Transfer"].consuming
    assert template.choices["Iou_Split"].arg_type is not None


def test_lf_1_6_decimal_is_numeric_10(shared_fixtures: Path) -> None:
    dar = _load(shared_fixtures, "test-1.6.dar")
    box = dar.main_package.modules["DecimalMod"].data_types["Box"]
    assert dict(box.fields)["x"] == TBuiltin(PrimType.NUMERIC, (TNat(10),))
    assert dar.main_package.lf_version == "1.6"
    assert dar.main_package.name is None  # package metadata exists from LF 1.8


def test_values_decode_lazily_and_completely(shared_fixtures: Path) -> None:
    dar = _load(shared_fixtures, "TestingTypes-1_0_0-sdk_0_13_36-lf_1_6.dar")
    count = 0
    for package in dar.packages.values():
        for module in package.modules.values():
            for value in module.values.values():
                assert value.body is not None
                count += 1
    assert count > 1000


def test_decoded_packages_are_cached_by_id(shared_fixtures: Path) -> None:
    first = _load(shared_fixtures, "model-tests-1.15.dar")
    second = _load(shared_fixtures, "semantic-tests-1.15.dar")
    shared_ids = set(first.packages) & set(second.packages)
    assert shared_ids
    for package_id in shared_ids:
        assert first.packages[package_id] is second.packages[package_id]


@pytest.mark.parametrize(("dar_name", "version"), [
    ("Test-1.5.dar", "1.5"),
    ("test-1.17.dar", "1.17"),
    ("CantonExamples.dar", "2.1"),
    ("illformed.dar", "2.1"),
])
def test_unsupported_versions_are_rejected(shared_fixtures: Path, dar_name: str,
                                           version: str) -> None:
    with pytest.raises(DarError, match=rf"Unsupported Daml-LF version {re.escape(version)} "):
        _load(shared_fixtures, dar_name)


def test_not_a_zip_is_rejected() -> None:
    with pytest.raises(DarError, match="not a zip archive"):
        load_dar(b"definitely not a zip")


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def test_missing_manifest_is_rejected() -> None:
    with pytest.raises(DarError, match=r"missing META-INF/MANIFEST\.MF"):
        load_dar(_zip({"a.dalf": b""}))


def test_manifest_without_main_dalf_is_rejected() -> None:
    with pytest.raises(DarError, match="no Main-Dalf"):
        load_dar(_zip({"META-INF/MANIFEST.MF": b"Manifest-Version: 1.0\nFormat: daml-lf\n"}))


def test_manifest_naming_a_missing_dalf_is_rejected() -> None:
    manifest = b"Manifest-Version: 1.0\nMain-Dalf: main.dalf\nDalfs: main.dalf\n"
    with pytest.raises(DarError, match="lacks it"):
        load_dar(_zip({"META-INF/MANIFEST.MF": manifest}))


def test_hash_mismatch_is_rejected(shared_fixtures: Path) -> None:
    with zipfile.ZipFile(shared_fixtures / "daml" / "test-1.15.dar") as archive:
        dalf_name = next(n for n in archive.namelist() if n.endswith(".dalf"))
        dalf = archive.read(dalf_name)
    # Flip one payload byte near the end: the declared hash no longer matches.
    corrupted = bytearray(dalf)
    corrupted[-80] ^= 0x01
    with pytest.raises(DarError, match="package hash mismatch"):
        decode_dalf(bytes(corrupted), where=dalf_name)


def test_manifest_continuation_lines() -> None:
    text = ("Manifest-Version: 1.0\r\nMain-Dalf: a/very-long-name-that-wraps-over-seventy-"
            "two\r\n -columns.dalf\r\nDalfs: x.dalf, y.dal\r\n f\r\n")
    parsed = parse_manifest(text)
    assert parsed["Main-Dalf"] == "a/very-long-name-that-wraps-over-seventy-two-columns.dalf"
    assert parsed["Dalfs"] == "x.dalf, y.dalf"


def test_uncompressed_size_and_entries_are_bounded(shared_fixtures: Path) -> None:
    data = (shared_fixtures / "daml" / "test-1.15.dar").read_bytes()
    with pytest.raises(DarError, match="Invalid DAR: the archive unpacks to more than 1000 bytes"):
        load_dar(data, ArchiveLimits(max_total_size=1000))
    with pytest.raises(DarError, match="Invalid DAR: more than 1 entries"):
        load_dar(data, ArchiveLimits(max_entries=1))


def test_damaged_dars_are_always_dar_errors(shared_fixtures: Path) -> None:
    """Bit flips, truncations and overwritten runs: every failure is a DarError (a 400)."""
    rng = random.Random(8)
    dars = [(shared_fixtures / "daml" / name).read_bytes()
            for name in ("test-1.15.dar", "test-1.6.dar",
                         "dummy-daml-app-0.0.1-sdk_1_3_0-lf_1_8.dar")]
    for _ in range(150):
        dar_module._PACKAGE_CACHE.clear()
        try:
            load_dar(damaged(rng.choice(dars), rng))
        except DarError as err:
            assert len(str(err)) < 400



def _archive(payload: bytes) -> bytes:
    """An `Archive` message around `payload` with a correct SHA-256 hash."""
    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            byte = n & 0x7F
            n >>= 7
            out.append(byte | (0x80 if n else 0))
            if not n:
                return bytes(out)

    digest = hashlib.sha256(payload).hexdigest().encode()
    return (b"\x08\x00" + b"\x1a" + varint(len(payload)) + payload
            + b"\x22" + varint(len(digest)) + digest)


def test_corrupted_packages_fail_cleanly(shared_fixtures: Path) -> None:
    """Random byte corruption of a real payload (with a recomputed hash) either still decodes
    or raises DarError; never another exception."""
    import random

    from cairn.ledger.lf.wire import Msg

    with zipfile.ZipFile(shared_fixtures / "daml" / "test-1.15.dar") as archive:
        dalf = archive.read(next(n for n in archive.namelist() if n.endswith(".dalf")))
    payload = Msg(dalf).raw(3)
    assert decode_dalf(_archive(payload)).package_id == hashlib.sha256(payload).hexdigest()
    rng = random.Random(20261122)
    outcomes = {"ok": 0, "rejected": 0}
    for _ in range(300):
        corrupted = bytearray(payload)
        for _ in range(rng.randint(1, 4)):
            corrupted[rng.randrange(len(corrupted))] = rng.randrange(256)
        try:
            package = decode_dalf(_archive(bytes(corrupted)))
            for module in package.modules.values():
                for value in module.values.values():
                    # A lazily decoded body may still be malformed: that is a DecodeError.
                    with contextlib.suppress(DecodeError):
                        assert value.body is not None
            outcomes["ok"] += 1
        except DarError:
            outcomes["rejected"] += 1
    assert outcomes["rejected"] > 0
