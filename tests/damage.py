"""Damaged copies of real inputs (WASM, DARs, zips), for tests that every damage is a clean 400."""

from __future__ import annotations

import random


def damaged(data: bytes, rng: random.Random) -> bytes:
    """A damaged copy: bit flips, a truncation, an overwritten or duplicated run, or an insert."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        if not out:
            break
        where = rng.randrange(len(out))
        match rng.randrange(5):
            case 0:
                for _ in range(rng.randint(1, 8)):
                    spot = rng.randrange(len(out))
                    out[spot] ^= 1 << rng.randrange(8)
            case 1:
                del out[where:]
            case 2:
                out[where:where + rng.randint(1, 64)] = rng.randbytes(rng.randint(1, 64))
            case 3:
                out[where:where] = out[where:where + rng.randint(1, 4096)]
            case _:
                out[where:where] = rng.randbytes(rng.randint(1, 32))
    return bytes(out)
