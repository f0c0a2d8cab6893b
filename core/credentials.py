"""What the SMTP client authenticates with: a login, a secret and how to use it (SPEC 2.4, 5.6).

``kind`` says what the secret is: ``"password"`` (auth.conf, an account's
``password``/``password_file``/``password_command``) or ``"oauth2"`` (the secret
is an OAuth2 access token).  ``mechanism`` is an account's forced SASL mechanism
(upper case, e.g. ``"SCRAM-SHA-256"``) or None to let core choose (SPEC 5.6).

The secret never reaches a repr, a str, a log line or an error message: the
field is left out of the generated repr and ``__repr__`` says ``<secret hidden>``.
"""

from __future__ import annotations

from typing import Literal

from dma.core.errors import SoftwareError
from dma.core.values import field, frozen

CredentialKind = Literal["password", "oauth2"]
KINDS: tuple[CredentialKind, ...] = ("password", "oauth2")


@frozen
class Credentials:
    """A login and its secret (password or OAuth2 access token) for SMTP AUTH."""

    login: str
    secret: str = field(repr=False)  # never in repr, str or logs
    kind: CredentialKind = "password"
    mechanism: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise SoftwareError(
                f"credentials kind {self.kind!r} is neither 'password' nor 'oauth2'",
                hint="this is a bug in the caller",
            )

    def __repr__(self) -> str:
        return (
            f"Credentials(login={self.login!r}, secret=<secret hidden>, "
            f"kind={self.kind!r}, mechanism={self.mechanism!r})"
        )

    __str__ = __repr__
