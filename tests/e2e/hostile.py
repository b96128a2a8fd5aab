"""Helpers for hostile-input tests through the real stack: tokens, a state fingerprint, a bound."""

from __future__ import annotations

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


def redis_digest(client: syncredis.Redis) -> str:
    """A digest of the whole dataset (keys, values, expiries), computed by Redis itself: equal
    digests before and after a request mean it changed nothing."""
    return str(client.execute_command("DEBUG", "DIGEST"))
