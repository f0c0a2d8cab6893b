"""What happened to one queue item in one attempt: delivered, deferred or failed.

A pure value, so that core can decide what a delivery attempt adds up to
(``dma.core.hop_attempts``); the shell workflows report these to the queue run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class Outcome:
    """Delivered, deferred (try again later) or failed (bounce), with the reason."""

    kind: Literal["delivered", "deferred", "failed"]
    detail: str = ""
    status: str = ""                 # RFC 3463 code for bounces, e.g. 5.1.1
    diagnostic: str | None = None    # "smtp; 550 5.1.1 ..." when a server said it
    remote_mta: str | None = None


def delivered(detail: str) -> Outcome:
    return Outcome("delivered", detail)


def deferred(detail: str) -> Outcome:
    return Outcome("deferred", detail)


def failed(detail: str, status: str, diagnostic: str | None = None,
           remote_mta: str | None = None) -> Outcome:
    return Outcome("failed", detail, status, diagnostic, remote_mta)
