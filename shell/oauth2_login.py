"""``dma oauth2 login ACCOUNT``: the first refresh token, by the device authorization grant.

RFC 8628, so that a headless server can be set up over ssh: ask the account's
device endpoint for a code, print the address and the code for the user to enter
in any browser, poll the token endpoint at the interval the server asks
(``authorization_pending``: again; ``slow_down``: 5 s slower from then on), and
store the refresh token (and the first access token, in the cache beside it).

Where the tokens go: ``refresh_token_file`` (0600) and ``<refresh_token_file>.access``
(0600), written atomically.  In system mode (run as root on a host with the delivery
user) both belong to the delivery user, ``dma:dma`` 0600, in a directory it owns
(created 0700 when missing; one of another owner is refused), because remote
delivery runs as that user and must replace the file when the provider rotates the
refresh token.  Otherwise they belong to whoever runs the command.

Nothing secret is printed: the user code and the address are the server's for
the user to see; the device code and the tokens stay out of every line.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from dma.adapters.oauth2 import (
    HTTP_TIMEOUT,
    Owner,
    post_form,
    prepare_token_directory,
    write_secret_file,
)
from dma.core.errors import ConfigError, DataError, DmaError, TempFailure, UsageError
from dma.core.oauth2 import (
    DeviceAuthorization,
    Endpoints,
    Granted,
    OAuth2Settings,
    Polling,
    Refused,
    cache_entry,
    device_refusal,
    device_request,
    device_token_request,
    endpoints,
    next_poll,
    parse_device_authorization,
    parse_token_response,
    redact,
    render_cache,
    settings_for,
    start_polling,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from dma.shell.settings import Settings

PROGRAM = "dma oauth2"
USAGE = "usage: dma oauth2 login ACCOUNT"


def main(argv: list[str]) -> int:
    """Run ``dma oauth2`` with ``argv`` (the arguments after ``oauth2``); the exit code.
    Our errors are one line on stderr with their sysexits code."""
    try:
        return _main(argv)
    except DmaError as error:
        sys.stdout.flush()
        print(f"{PROGRAM}: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        sys.stdout.flush()
        print(f"{PROGRAM}: interrupted; nothing was stored", file=sys.stderr)
        return 75


def _main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "login" or not argv[1] or argv[1].startswith("-"):
        raise UsageError("expected: login ACCOUNT", hint=USAGE)
    from dma.adapters import system
    from dma.adapters.privileges import delivery_identity
    from dma.shell.settings import load_settings

    settings = load_settings(None, system.environment())
    oauth2 = account_settings(settings, argv[1])
    identity = delivery_identity()
    owner = None if identity is None else (identity.uid, identity.gid)
    login(oauth2, cafile=settings.config.cafile, owner=owner,
          owner_name=None if identity is None else identity.name)
    return 0


def account_settings(settings: Settings, name: str) -> OAuth2Settings:
    """The OAuth2 settings of account ``name`` in dma.conf's ACCOUNTS file."""
    from dma.shell.settings import load_accounts

    accounts = load_accounts(settings)
    if accounts is None:
        raise ConfigError("ACCOUNTS is not set, so there is no account to sign in",
                          where=settings.config_path,
                          hint="add ACCOUNTS /etc/dma/accounts.toml to dma.conf")
    account = accounts.accounts.get(name)
    if account is None:
        known = ", ".join(sorted(accounts.accounts)) or "none"
        raise ConfigError(f"no account {name!r} in {accounts.path}",
                          hint=f"accounts there: {known}")
    if account.oauth2 is None:
        raise ConfigError(f"account {name} has no oauth2 table", where=accounts.path,
                          hint=f"add [accounts.{name}.oauth2] (see the README)")
    return settings_for(name, account.oauth2)


def login(
    settings: OAuth2Settings, *, cafile: str | None = None, owner: Owner | None = None,
    owner_name: str | None = None, out: TextIO | None = None,
    clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
    timeout: float = HTTP_TIMEOUT,
) -> None:
    """Sign account ``settings`` in with the device flow and store its tokens
    (given to ``owner``, uid and gid, when we are root).  Our error when it fails."""
    out = sys.stdout if out is None else out
    account = settings.account
    if settings.token_command is not None or settings.refresh_token_file is None:
        raise UsageError(f"account {account} gets its tokens from token_command: "
                         "there is nothing to sign in to", hint=USAGE)
    where = endpoints(settings)
    prepare_token_directory(settings.refresh_token_file, owner)
    authorization = _authorize(settings, where, cafile, timeout)
    _show(out, account, authorization)
    granted = _poll(settings, where, start_polling(authorization, clock()),
                    cafile=cafile, timeout=timeout, out=out, clock=clock, sleep=sleep)
    _store(settings, where, granted, owner, clock())
    whose = f"owner {owner_name}, " if owner_name else ""
    print(f"Signed in: account {account}'s refresh token is in {settings.refresh_token_file} "
          f"({whose}mode 0600). Mail through this account can go now (dma -q).",
          file=out, flush=True)


def _authorize(settings: OAuth2Settings, where: Endpoints, cafile: str | None,
               timeout: float) -> DeviceAuthorization:
    """The device authorization request and its answer (RFC 8628 3.1-3.2)."""
    post = device_request(settings, where)
    status, body = post_form(post, cafile=cafile, timeout=timeout)
    try:
        answer = parse_device_authorization(status, body)
    except DataError as error:
        raise TempFailure(f"account {settings.account}: {post.url}: {error.message}",
                          hint="the device endpoint is not answering as RFC 8628 says") from None
    if isinstance(answer, Refused):
        raise device_refusal(settings, where,
                             Refused(answer.error, redact(answer.description, post.secrets)))
    return answer


def _show(out: TextIO, account: str, authorization: DeviceAuthorization) -> None:
    minutes = max(1, authorization.expires_in // 60)
    lines = [
        f"To sign account {account} in, open {authorization.verification_uri} "
        f"in a browser and enter the code {authorization.user_code}",
    ]
    if authorization.verification_uri_complete:
        lines.append(f"(or open {authorization.verification_uri_complete})")
    lines.append(f"The code is good for {minutes} minute{'s' if minutes > 1 else ''}; "
                 "waiting for the sign-in...")
    print("\n".join(lines), file=out, flush=True)


def _poll(settings: OAuth2Settings, where: Endpoints, polling: Polling, *,
          cafile: str | None, timeout: float, out: TextIO,
          clock: Callable[[], float], sleep: Callable[[float], None]) -> Granted:
    """Poll until core says it is done (RFC 8628 3.4-3.5).  An endpoint that does not
    answer, or answers nonsense, is asked again at the next interval."""
    while True:
        sleep(polling.interval)
        post = device_token_request(settings, where, polling.device_code)
        try:
            status, body = post_form(post, cafile=cafile, timeout=timeout)
            answer = parse_token_response(status, body, clock())
        except (TempFailure, DataError) as error:
            print(f"(no answer from the token endpoint: {error.message}; asking again)",
                  file=out, flush=True)
            answer = Refused("authorization_pending")
        if isinstance(answer, Refused):
            answer = Refused(answer.error, redact(answer.description, post.secrets))
        step = next_poll(settings.account, polling, answer, clock())
        if isinstance(step, Granted):
            return step
        polling = step


def _store(settings: OAuth2Settings, where: Endpoints, granted: Granted,
           owner: Owner | None, now: float) -> None:
    """The refresh token, then the first access token in the cache."""
    path = settings.refresh_token_file or ""
    try:
        write_secret_file(path, (granted.refresh_token or "").encode("ascii") + b"\n",
                          owner=owner)
        if granted.expires_at > now and settings.cache_file is not None:
            write_secret_file(settings.cache_file,
                              render_cache(cache_entry(settings, where, granted)), owner=owner)
    except OSError as error:
        from dma.core.errors import CantCreateError

        raise CantCreateError(f"cannot store the refresh token in {path}: "
                              f"{error.strerror or error}",
                              hint="check the directory; then run the login again") from None
