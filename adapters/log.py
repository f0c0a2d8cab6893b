"""Logging: pure processors turn an event dict into one line; only the sink writes.

Delivery and queue-run processes log through structlog (configured here, so that
``structlog.testing.capture_logs()`` sees their events).  The submission path must
stay light (importing structlog costs ~45 ms, more than our whole start-up budget),
so it runs the very same processor chain through ``LightLogger`` without importing
structlog.  Either way one event is one line in syslog (facility mail) and, in the
foreground or with -v, on stderr.
"""

from __future__ import annotations

import sys
import syslog
from collections.abc import Callable, MutableMapping

from dma.core.octets import printable

TYPE_CHECKING = False  # not typing's: a submission need not import typing
if TYPE_CHECKING:
    from typing import Any, Protocol

    class Logger(Protocol):
        """What the workflows log through: structlog's bound logger or ``LightLogger``."""

        def bind(self, **values: Any) -> Logger: ...
        def debug(self, event: str, **values: Any) -> Any: ...
        def info(self, event: str, **values: Any) -> Any: ...
        def warning(self, event: str, **values: Any) -> Any: ...
        def error(self, event: str, **values: Any) -> Any: ...

    EventDict = MutableMapping[str, Any]
    Processor = Callable[[Any, str, EventDict], Any]

SECRET_KEYS = frozenset({"password", "secret", "token", "auth", "credentials", "passwd"})
REDACTED = "<redacted>"

_PRIORITY = {
    "debug": syslog.LOG_DEBUG,
    "info": syslog.LOG_INFO,
    "notice": syslog.LOG_NOTICE,
    "warning": syslog.LOG_WARNING,
    "error": syslog.LOG_ERR,
    "exception": syslog.LOG_ERR,
    "critical": syslog.LOG_CRIT,
    "msg": syslog.LOG_INFO,
}


def redact_secrets(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """Replace the value of any key that names a secret, whatever the caller passed."""
    for key in event_dict:
        if key.lower() in SECRET_KEYS:
            event_dict[key] = REDACTED
    return event_dict


def _format_value(value: object) -> str:
    text = printable(value)
    if text == "" or any(c in text for c in ' "='):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def render_line(_logger: Any, _method: str, event_dict: EventDict) -> str:
    """``<id>: event key=value ...``: one line, the queue id first when there is one."""
    fields = dict(event_dict)
    event = printable(fields.pop("event", ""))
    queue_id = fields.pop("id", None)
    parts = [f"{printable(queue_id)}: {event}" if queue_id else event]
    parts += [f"{printable(key)}={_format_value(value)}" for key, value in fields.items()]
    return " ".join(parts)


PROCESSORS: tuple[Processor, ...] = (redact_secrets, render_line)


class SyslogSink:
    """The last step: write a rendered line to syslog and, when asked, to stderr."""

    def __init__(self, tag: str, *, stderr: bool) -> None:
        self.tag = printable(tag)
        self.stderr = stderr
        try:
            syslog.openlog(self.tag, syslog.LOG_PID, syslog.LOG_MAIL)
        except Exception:
            pass

    def _write(self, method: str, line: str) -> None:
        """Write ``line``; logging never raises (a line that cannot be written is lost,
        the work it describes is not)."""
        line = printable(line)
        try:
            syslog.syslog(_PRIORITY.get(method, syslog.LOG_INFO), line)
        except Exception:
            pass
        if self.stderr:
            try:
                print(f"{self.tag}: {line}", file=sys.stderr, flush=True)
            except Exception:  # stderr closed, a full disk, a reader gone
                pass

    def __getattr__(self, method: str) -> Callable[[str], None]:
        if method not in _PRIORITY:
            raise AttributeError(method)
        return lambda line: self._write(method, line)


class LightLogger:
    """A structlog-shaped logger for the submission path: bind() and one method per level."""

    def __init__(self, sink: SyslogSink, context: dict[str, Any] | None = None) -> None:
        self._sink = sink
        self._context = context or {}

    def bind(self, **values: Any) -> LightLogger:
        return LightLogger(self._sink, {**self._context, **values})

    def _log(self, method: str, event: str, values: dict[str, Any]) -> None:
        event_dict: Any = {"event": event, **self._context, **values}
        for processor in PROCESSORS:
            event_dict = processor(None, method, event_dict)
        getattr(self._sink, method)(event_dict)

    def debug(self, event: str, **values: Any) -> None:
        self._log("debug", event, values)

    def info(self, event: str, **values: Any) -> None:
        self._log("info", event, values)

    def warning(self, event: str, **values: Any) -> None:
        self._log("warning", event, values)

    def error(self, event: str, **values: Any) -> None:
        self._log("error", event, values)


def light_logger(tag: str, *, stderr: bool = False) -> LightLogger:
    """The submission path's logger (no structlog import)."""
    return LightLogger(SyslogSink(tag, stderr=stderr))


def configure_structlog(tag: str, *, stderr: bool = False) -> None:
    """Route structlog's loggers through our processors to syslog (and stderr)."""
    import structlog

    structlog.configure(
        processors=list(PROCESSORS),
        logger_factory=lambda *args: SyslogSink(tag, stderr=stderr),
        cache_logger_on_first_use=False,
    )


def structlog_logger(**context: Any) -> Any:
    """A structlog logger bound to ``context`` (call configure_structlog first)."""
    import structlog

    return structlog.get_logger().bind(**context)
