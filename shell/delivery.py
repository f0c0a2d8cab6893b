"""The process model after submission and the queue run (SPEC 5.1).

Delivery itself arrives with the local and remote delivery issues; until then
every item stays queued, as with DEFER, and a queue run only cleans up.
"""

from __future__ import annotations

from dma.adapters import system
from dma.adapters.spool import Spool
from dma.core.cmdline import Invocation
from dma.shell.settings import Settings


def after_submission(invocation: Invocation, settings: Settings, item_ids: list[str]) -> int:
    """What happens once a message is spooled: nothing yet beyond queueing it."""
    return 0


def run_queue(invocation: Invocation, settings: Settings) -> int:
    """-q: clean what a crash left in the spool."""
    spool = Spool(settings.config.spooldir)
    spool.prepare()
    spool.clean(system.epoch())
    return 0
