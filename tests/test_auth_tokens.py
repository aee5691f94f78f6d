"""Bearer tokens: a verified token is remembered until it expires, and only that token."""
from __future__ import annotations

import pytest

from petitions.domain.access import Principal, Role
from petitions.infra import auth
from petitions.infra.auth import InvalidToken, TokenAuthority

KEY = "token-test-signing-key-0123456789abcdef0123"
CLERK = Principal("clerk-1", Role.INTAKE_CLERK, "330106")


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def authority(clock: Clock) -> TokenAuthority:
    return TokenAuthority(KEY, clock=clock)


def test_a_verified_token_names_its_principal_again_until_it_expires():
    minted = TokenAuthority(KEY)
    token = minted.mint(CLERK, ttl_seconds=60)
    clock = Clock(minted.clock())
    checker = authority(clock)
    assert checker.verify(token) == CLERK
    clock.now += 30
    assert checker.verify(token) == CLERK
    clock.now += 31  # past "exp"
    with pytest.raises(InvalidToken, match="expired"):
        checker.verify(token)
    with pytest.raises(InvalidToken, match="expired"):
        checker.verify(token)


def test_an_expired_token_is_refused_on_first_sight():
    minted = TokenAuthority(KEY)
    token = minted.mint(CLERK, ttl_seconds=60)
    with pytest.raises(InvalidToken, match="expired"):
        authority(Clock(minted.clock() + 61)).verify(token)


def test_a_remembered_token_does_not_vouch_for_an_altered_one():
    checker = TokenAuthority(KEY)
    token = checker.mint(CLERK)
    assert checker.verify(token) == CLERK
    header, payload, signature = token.split(".")
    altered = ".".join([header, payload, signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")])
    with pytest.raises(InvalidToken):
        checker.verify(altered)
    other_key = TokenAuthority(KEY + "-other")
    with pytest.raises(InvalidToken):
        other_key.verify(token)


def test_the_memory_of_verified_tokens_is_bounded(monkeypatch):
    monkeypatch.setattr(auth, "VERIFIED_TOKENS_KEPT", 3)
    checker = TokenAuthority(KEY)
    tokens = [checker.mint(Principal(f"clerk-{i}", Role.INTAKE_CLERK, "330106"))
              for i in range(5)]
    for token in tokens:
        checker.verify(token)
    assert len(checker._verified) == 3
    assert set(checker._verified) == set(tokens[2:])
    assert checker.verify(tokens[0]).subject == "clerk-0"  # forgotten, so checked afresh


@pytest.mark.parametrize("exp", [[], {"at": 1}, "soon", float("inf"), None])
def test_a_malformed_expiry_is_an_invalid_token(exp):
    import jwt

    token = jwt.encode({"iss": auth.ISSUER, "sub": "clerk-1", "role": "intake_clerk",
                        "jur": "330106", "exp": exp}, KEY, algorithm=auth.ALGORITHM)
    with pytest.raises(InvalidToken):
        TokenAuthority(KEY).verify(token)
