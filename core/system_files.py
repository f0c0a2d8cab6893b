"""The texts of the files ``dma install-system`` writes (SPEC 8.2): the commented
default dma.conf, the systemd units and the cron file.

Pure functions of their arguments (the installed ``dma`` command, the spool), so
that the planner can compare them with what a host holds and a test can verify the
units with ``systemd-analyze verify``.
"""

from __future__ import annotations

from dma.core.config import KEYS
from dma.core.system_layout import MAILDROP, SECRET_FILE_MODE

RUNNER_SERVICE = "dma.service"
"""The long-lived queue runner (``dma -q5m``), started at boot."""

PICKUP_SERVICE = "dma-pickup.service"
"""One pickup and delivery pass, started by the path unit."""

PICKUP_PATH = "dma-pickup.path"
"""Watches the maildrop and starts PICKUP_SERVICE when a file arrives."""

RUNNER_ARGS = ("-q5m",)
"""The runner: a queue run every 5 minutes, for as long as it runs (SPEC 1, -qTIME)."""

PICKUP_ARGS = ("-q",)
"""One queue run now: picks up the maildrop and delivers what it finds."""

_EXAMPLES = (
    "SMARTHOST smtp.example.org",
    "PORT 587",
    "SECURETRANSFER",
    "STARTTLS",
    "VERIFYCERT",
    "AUTHPATH /etc/dma/auth.conf",
)


def default_config() -> str:
    """A dma.conf that sets nothing: every key as a comment with its default and meaning."""
    lines = [
        "# /etc/dma/dma.conf: pydma's configuration, written by `dma install-system`.",
        "# Every user reads it (a submission needs it): keep secrets out of it. SMTP",
        "# logins go in auth.conf (login|host:password), root:dma mode"
        f" {SECRET_FILE_MODE:04o}, named by AUTHPATH.",
        "#",
        "# One `KEY value` a line; a key alone turns an option on. The keys, their",
        "# defaults and what they do (man 8 dma has more):",
        "#",
    ]
    for spec in KEYS.values():
        if spec.field is None:
            continue
        lines.append(f"# {spec.name} (default {spec.default}): {spec.doc}")
    lines += ["#", "# For instance, to send everything through a provider's submission port:"]
    lines += [f"#{example}" for example in _EXAMPLES]
    return "\n".join(lines) + "\n"


def _command(dma: str, args: tuple[str, ...]) -> str:
    return " ".join((dma, *args))


def runner_unit(dma: str, *, documented: bool) -> str:
    """dma.service: the long-lived runner as root (it drops to the delivery user for
    remote work); restarted when it fails."""
    return (
        "[Unit]\n"
        "Description=dma mail queue runner (pydma): delivers queued mail, retries every"
        " 5 minutes\n"
        + _documentation(documented)
        + "After=network-online.target nss-lookup.target\n"
        "Wants=network-online.target\n"
        "\n"
        "[Service]\n"
        "Type=simple\n"
        f"ExecStart={_command(dma, RUNNER_ARGS)}\n"
        "Restart=on-failure\n"
        "RestartSec=10s\n"
        + _hardening()
        + "\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


def pickup_unit(dma: str, *, documented: bool) -> str:
    """dma-pickup.service: one pass that takes the maildrop's files and delivers them."""
    return (
        "[Unit]\n"
        "Description=dma mail pickup (pydma): queues and delivers new maildrop files\n"
        + _documentation(documented)
        + "After=network-online.target nss-lookup.target\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"ExecStart={_command(dma, PICKUP_ARGS)}\n"
        + _hardening()
    )


def pickup_path_unit(spooldir: str, *, documented: bool) -> str:
    """dma-pickup.path: a change in the maildrop starts dma-pickup.service.

    PathChanged, not DirectoryNotEmpty: a maildrop file that stays (a submitter still
    writing, or one it left half-written) would restart the service in a loop until
    systemd's trigger limit stops watching for good; a file that arrives while a
    pass runs is taken by the runner's next pass.
    """
    return (
        "[Unit]\n"
        "Description=dma mail pickup (pydma): watches the maildrop\n"
        + _documentation(documented)
        + "\n"
        "[Path]\n"
        f"PathChanged={spooldir.rstrip('/')}/{MAILDROP}\n"
        f"Unit={PICKUP_SERVICE}\n"
        "\n"
        "[Install]\n"
        "WantedBy=paths.target\n"
    )


def cron_file(dma: str) -> str:
    """/etc/cron.d/dma where systemd does not run: the runner at boot, and the
    Debian queue run every 5 minutes as the last resort (SPEC 8.2)."""
    return (
        "# pydma (written by `dma install-system`; `dma install-system --uninstall`"
        " removes it).\n"
        "# The queue runner starts at boot; a queue run every 5 minutes is the last"
        " resort.\n"
        "SHELL=/bin/sh\n"
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin\n"
        f"@reboot root {_command(dma, RUNNER_ARGS)}\n"
        f"*/5 * * * * root {_command(dma, ('-q',))}\n"
    )


def _documentation(documented: bool) -> str:
    """The Documentation= line, only when the manual page is installed
    (``systemd-analyze verify`` runs ``man`` on it)."""
    return "Documentation=man:dma(8)\n" if documented else ""


def _hardening() -> str:
    """What neither the runner nor a pickup pass needs: /usr, /boot and /etc stay
    read-only, a private /tmp, no privileges gained through exec."""
    return "NoNewPrivileges=yes\nProtectSystem=full\nPrivateTmp=yes\n"
