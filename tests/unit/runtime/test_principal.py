"""The signed principal header: only the holder of the internal secret can mint one."""

from cairn.runtime.principal import ASSERTION_TTL_SECONDS, Principal, Verifier, sign, verify

SECRET = "s3cret"


def test_round_trip_keeps_account_token_and_roles() -> None:
    p = Principal("acct-1", "tok-1", ("Admin",))
    assert verify(sign(p, SECRET), SECRET) == p


def test_other_secret_tampering_and_garbage_are_rejected() -> None:
    assertion = sign(Principal("acct-1"), SECRET)
    payload, _, mac = assertion.partition(".")
    forged = sign(Principal("acct-2"), SECRET).partition(".")[0] + "." + mac
    assert verify(assertion, "other") is None
    assert verify(forged, SECRET) is None
    assert verify("garbage", SECRET) is None
    assert verify(f"{payload}.", SECRET) is None
    assert verify(assertion, "") is None


def test_expired_assertion_is_rejected() -> None:
    assertion = sign(Principal("acct-1"), SECRET, now=1000.0)
    assert verify(assertion, SECRET, now=1000.0 + ASSERTION_TTL_SECONDS - 1) is not None
    assert verify(assertion, SECRET, now=1000.0 + ASSERTION_TTL_SECONDS + 1) is None


def test_verifier_remembers_a_valid_assertion_only_until_it_expires() -> None:
    verifier = Verifier(SECRET)
    p = Principal("acct-1", "tok-1", ("Admin",))
    assertion = sign(p, SECRET, now=1000.0)
    assert verifier(assertion, now=1000.0) == p
    assert verifier(assertion, now=1000.0 + ASSERTION_TTL_SECONDS - 1) == p  # remembered
    assert verifier(assertion, now=1000.0 + ASSERTION_TTL_SECONDS + 1) is None
    assert Verifier("other")(assertion, now=1000.0) is None
    assert verifier("garbage") is None
