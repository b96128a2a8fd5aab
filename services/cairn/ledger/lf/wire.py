"""A compact, allocation-light protobuf wire-format reader for DAML-LF archives.

The DAML-LF protobuf schema is large, but the decoder only ever needs "give me field N of
this message"; reading the wire format directly avoids generated classes (and their
protobuf-runtime version coupling) and lets the package decoder stay lazy: a nested message
is just a (start, end) window on the archive bytes until someone asks for its fields.
"""

from __future__ import annotations

WireValue = int | tuple[int, int]


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def _read_varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise WireError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise WireError("varint too long")


class Msg:
    """One protobuf message: its fields indexed by number, nested messages left unparsed."""

    __slots__ = ("buf", "fields")

    def __init__(self, buf: bytes, start: int = 0, end: int | None = None) -> None:
        self.buf = buf
        self.fields: dict[int, list[WireValue]] = {}
        self._parse(start, len(buf) if end is None else end)

    def _parse(self, pos: int, end: int) -> None:
        buf = self.buf
        fields = self.fields
        while pos < end:
            byte = buf[pos]
            if byte < 0x80:
                key = byte
                pos += 1
            else:
                key, pos = _read_varint(buf, pos, end)
            number = key >> 3
            wire_type = key & 7
            value: WireValue
            if wire_type == 0:
                byte = buf[pos] if pos < end else 0x80
                if byte < 0x80:
                    value = byte
                    pos += 1
                else:
                    value, pos = _read_varint(buf, pos, end)
            elif wire_type == 2:
                # Lengths are almost always one or two varint bytes: decode those inline.
                byte = buf[pos] if pos < end else 0x80
                if byte < 0x80:
                    length = byte
                    pos += 1
                elif pos + 1 < end and buf[pos + 1] < 0x80:
                    length = (byte & 0x7F) | (buf[pos + 1] << 7)
                    pos += 2
                else:
                    length, pos = _read_varint(buf, pos, end)
                if pos + length > end:
                    raise WireError("truncated length-delimited field")
                value = (pos, pos + length)
                pos += length
            elif wire_type == 1:
                if pos + 8 > end:
                    raise WireError("truncated fixed64 field")
                value = int.from_bytes(buf[pos : pos + 8], "little")
                pos += 8
            elif wire_type == 5:
                if pos + 4 > end:
                    raise WireError("truncated fixed32 field")
                value = int.from_bytes(buf[pos : pos + 4], "little")
                pos += 4
            else:
                raise WireError(f"unsupported wire type {wire_type}")
            bucket = fields.get(number)
            if bucket is None:
                fields[number] = [value]
            else:
                bucket.append(value)

    def has(self, number: int) -> bool:
        return number in self.fields

    def which(self, numbers: tuple[int, ...]) -> int:
        """The first of `numbers` present in this message (a oneof discriminator), or -1."""
        fields = self.fields
        for number in numbers:
            if number in fields:
                return number
        return -1

    def _last(self, number: int) -> WireValue | None:
        bucket = self.fields.get(number)
        return bucket[-1] if bucket else None

    def uint(self, number: int, default: int = 0) -> int:
        value = self._last(number)
        if value is None:
            return default
        if isinstance(value, tuple):
            raise WireError(f"field {number} is not a varint")
        return value

    def int32(self, number: int, default: int = 0) -> int:
        value = self.uint(number, default)
        return value - (1 << 64) if value >= (1 << 63) else value

    def sint64(self, number: int) -> int:
        value = self.uint(number)
        return (value >> 1) ^ -(value & 1)

    def sfixed64(self, number: int) -> int:
        value = self.uint(number)
        return value - (1 << 64) if value >= (1 << 63) else value

    def boolean(self, number: int) -> bool:
        return self.uint(number) != 0

    def raw(self, number: int) -> bytes:
        value = self._last(number)
        if value is None:
            return b""
        if not isinstance(value, tuple):
            raise WireError(f"field {number} is not length-delimited")
        return self.buf[value[0] : value[1]]

    def string(self, number: int) -> str:
        try:
            return self.raw(number).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise WireError(f"field {number} is not valid UTF-8") from exc

    def strings(self, number: int) -> list[str]:
        out = []
        for value in self.fields.get(number, ()):
            if not isinstance(value, tuple):
                raise WireError(f"field {number} is not length-delimited")
            try:
                out.append(self.buf[value[0] : value[1]].decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise WireError(f"field {number} is not valid UTF-8") from exc
        return out

    def msg(self, number: int) -> Msg | None:
        value = self._last(number)
        if value is None:
            return None
        if not isinstance(value, tuple):
            raise WireError(f"field {number} is not a message")
        return Msg(self.buf, value[0], value[1])

    def msgs(self, number: int) -> list[Msg]:
        out = []
        for value in self.fields.get(number, ()):
            if not isinstance(value, tuple):
                raise WireError(f"field {number} is not a message")
            out.append(Msg(self.buf, value[0], value[1]))
        return out

    def window(self, number: int) -> tuple[int, int] | None:
        """Byte range of a nested message, to parse later (lazy decoding)."""
        value = self._last(number)
        if value is None or isinstance(value, tuple):
            return value
        raise WireError(f"field {number} is not a message")

    def windows(self, number: int) -> list[tuple[int, int]]:
        out = []
        for value in self.fields.get(number, ()):
            if not isinstance(value, tuple):
                raise WireError(f"field {number} is not a message")
            out.append(value)
        return out

    def packed_ints(self, number: int) -> list[int]:
        """A repeated int32 field, accepting both packed and unpacked encodings."""
        out: list[int] = []
        for value in self.fields.get(number, ()):
            if isinstance(value, tuple):
                pos, end = value
                while pos < end:
                    item, pos = _read_varint(self.buf, pos, end)
                    out.append(item)
            else:
                out.append(value)
        return out
