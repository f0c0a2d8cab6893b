"""What happened to one queue item in one attempt: delivered, deferred or failed.

A pure value, so that core can decide what a delivery attempt adds up to
(``dma.core.hop_attempts``); the shell workflows report these to the queue run.
"""

from __future__ import annotations

from typing import Literal

from dma.core.values import frozen


@frozen
class Outcome:
    """Delivered, deferred (try again later) or failed (bounce), with the reason."""

    kind: Literal["delivered", "deferred", "failed"]
    detail: str = ""
    status: str = ""                 # RFC 3463 code for bounces, e.g. 5.1.1
    diagnostic: str | None = None    # "smtp; 550 5.1.1 ..." when a server said it
    remote_mta: str | None = None
    # A comma-list item (C dma): each address not delivered, with its own outcome, so
    # that those refused for good bounce and those only deferred wait in the queue.
    parts: tuple[tuple[str, Outcome], ...] = ()

    def parts_of(self, kind: str) -> tuple[tuple[str, Outcome], ...]:
        """The addresses of a comma-list item whose own outcome is ``kind``."""
        return tuple((part, outcome) for part, outcome in self.parts if outcome.kind == kind)


def delivered(detail: str) -> Outcome:
    return Outcome("delivered", detail)


def deferred(detail: str, parts: tuple[tuple[str, Outcome], ...] = ()) -> Outcome:
    return Outcome("deferred", detail, parts=parts)


def failed(detail: str, status: str, diagnostic: str | None = None,
           remote_mta: str | None = None, parts: tuple[tuple[str, Outcome], ...] = ()
           ) -> Outcome:
    return Outcome("failed", detail, status, diagnostic, remote_mta, parts)
