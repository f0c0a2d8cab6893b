"""The ledger of a delivery run: what each address's outcome makes of its queue item.

Typed ids stand for the addresses, so nothing is parsed back out of a string.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class AddressId:
    """One address of one queue item: ``part`` indexes the item's Recipient list.

    A C dma Q file may name several addresses (``a@x.org,b@y.org``); each is worked
    on alone.  An item with one address has the one part 0.
    """

    item_id: str
    part: int = 0

    def __str__(self) -> str:
        """The item's id, as log lines and mailq name it."""
        return self.item_id
