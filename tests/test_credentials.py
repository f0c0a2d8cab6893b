"""Credentials: a frozen value whose repr and str never show the secret."""

from __future__ import annotations

import dataclasses

import pytest

from dma.core.credentials import Credentials
from dma.core.errors import SoftwareError

SECRET = "s3cr3t-p4ss-Zq"


def test_repr_and_str_hide_the_secret() -> None:
    """repr, str, format and an f-string name the login and say the secret is hidden."""
    cred = Credentials("alice@example.com", SECRET, "oauth2", "XOAUTH2")
    for text in (repr(cred), str(cred), f"{cred}", f"{cred!r}", format(cred, ""), repr([cred])):
        assert SECRET not in text
        assert "<secret hidden>" in text
        assert "alice@example.com" in text


def test_defaults_and_equality() -> None:
    """kind defaults to password and mechanism to None; equal fields give equal values."""
    cred = Credentials("bob", SECRET)
    assert (cred.kind, cred.mechanism) == ("password", None)
    assert cred == Credentials("bob", SECRET, "password", None)
    assert cred != Credentials("bob", SECRET + "x")
    assert len({cred, Credentials("bob", SECRET)}) == 1


def test_frozen() -> None:
    """A Credentials value cannot be changed after it is made."""
    cred = Credentials("bob", SECRET)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cred.secret = "other"  # type: ignore[misc]


def test_unknown_kind_is_a_bug_and_hides_the_secret() -> None:
    """A kind other than password or oauth2 raises SoftwareError whose text has no secret."""
    with pytest.raises(SoftwareError) as caught:
        Credentials("bob", SECRET, "kerberos")  # type: ignore[arg-type]
    assert SECRET not in str(caught.value)
