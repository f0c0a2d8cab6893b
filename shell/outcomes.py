"""What happened to one queue item in one attempt, as the workflows report it.

The values live in ``dma.core.outcomes`` (core decides what a hop's attempts add
up to); this name stays so that the workflows' imports need not change.
"""

from __future__ import annotations

from dma.core.outcomes import Outcome, deferred, delivered, failed

__all__ = ["Outcome", "deferred", "delivered", "failed"]
