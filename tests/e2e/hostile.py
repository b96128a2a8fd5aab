"""Helpers for hostile-input tests through the real stack: tokens, a state fingerprint, limits.

`RedisState` fingerprints every key in the stack's Redis (type and DUMP of the value), so a
test can show that a refused request changed nothing: take one before, one after, compare.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import redis as syncredis

ALICE = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJodHRwczovL2RhbWwuY29tL2xlZGdlci1hcGkiOnsibGVkZ2VySWQi"
    "OiJNeUxlZGdlciIsImFwcGxpY2F0aW9uSWQiOiJIVFRQLUpTT04tQVBJLUdhdGV3YXkiLCJhY3RBcyI6WyJBbGljZSJdfX0"
    ".34zzF_fbWv7p60r5s1kKzwndvGdsJDX-W4Xhm4oVdpk"
)
# A reply slower than this counts as a hang (the acceptance bound; generous for a loaded CI box).
REPLY_BOUND_SECONDS = 5.0


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass(frozen=True)
class RedisState:
    """A fingerprint of all of Redis: key -> digest of (type, DUMP)."""

    digests: dict[bytes, str]

    @classmethod
    def of(cls, url: str) -> RedisState:
        client = syncredis.Redis.from_url(url, socket_timeout=30)
        try:
            digests = {}
            for key in client.scan_iter(count=1000):
                kind = client.type(key)
                dumped = client.dump(key)
                if dumped is None:  # expired between SCAN and DUMP
                    continue
                digests[key] = hashlib.sha256(kind + b"\0" + dumped).hexdigest()
            return cls(digests)
        finally:
            client.close()

    def changes(self, later: RedisState) -> list[str]:
        """Keys added, removed or changed since this fingerprint."""
        keys = set(self.digests) | set(later.digests)
        return sorted(k.decode(errors="replace") for k in keys
                      if self.digests.get(k) != later.digests.get(k))
