"""Large uploads are analysed through a memory map: same metadata, only touched pages loaded."""

from __future__ import annotations

import mmap
from pathlib import Path

from cairn.component.service import ANALYSE_IN_MEMORY_MAX, _analyse_file
from cairn.component.wasm import analyse_component, metadata_to_json


def _leb128(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def with_custom_section(base: bytes, payload_size: int) -> bytes:
    """`base` plus a custom section (which the parser skips by length) of `payload_size` zeros."""
    name = b"padding"
    content = _leb128(len(name)) + name + bytes(payload_size)
    return base + b"\x00" + _leb128(len(content)) + content


def test_a_mapped_binary_gives_the_same_metadata(shared_fixtures: Path, tmp_path: Path) -> None:
    fixture = shared_fixtures / "golem" / "wasm" / "wasmast_shopping-cart.wasm"
    with fixture.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as m:
        assert analyse_component(m) == analyse_component(fixture.read_bytes())


def test_an_upload_over_the_in_memory_size_is_analysed_mapped(
    shared_fixtures: Path, tmp_path: Path
) -> None:
    base = (shared_fixtures / "golem" / "wasm" / "wasmast_shopping-cart.wasm").read_bytes()
    big = tmp_path / "big.wasm"
    big.write_bytes(with_custom_section(base, ANALYSE_IN_MEMORY_MAX))
    assert _analyse_file(big).metadata == metadata_to_json(analyse_component(base))
