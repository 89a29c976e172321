"""Business rules on what may be recommended: availability, tags and item ids.

A shop hides items that are out of stock, a news site keeps one section out
of the feed, a marketplace bans a seller's items. These rules decide whether
an item is *eligible*; the catalogue keeps the answer in its recommendable
mask, so exact and two-stage ranking, the vector index and every runtime
(embedded, Kafka, evaluation) honour them the same way, before the top k.

An item is eligible when

- its record says ``available`` (the default), and
- its id is not in ``exclude_items``, and
- none of its tags is in ``exclude_tags``, and
- ``include_tags`` is empty or one of its tags is in it.

Expiry (``expires_at``) depends on event time and is kept by the catalogue
(:meth:`models.item_catalog.ItemCatalog.expire`); a user's ``dismiss`` event
hides one item for that user only (the engine adds it to the user's
exclusions).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["ItemRules"]


@dataclass(frozen=True, slots=True)
class ItemRules:
    """Which catalogue items may be recommended (tags compare case-insensitively).

    Examples
    --------
    >>> rules = ItemRules(exclude_tags=frozenset({"adult"}), include_tags=frozenset({"books"}))
    >>> rules.allows("b1", ["Books", "Fiction"]), rules.allows("b2", ["books", "Adult"])
    (True, False)
    >>> rules.allows("t1", ["toys"]), rules.allows("b3", ["books"], available=False)
    (False, False)
    >>> ItemRules().allows("anything", [])
    True
    """

    include_tags: frozenset[str] = frozenset()
    exclude_tags: frozenset[str] = frozenset()
    exclude_items: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls,
        include_tags: Iterable[str] = (),
        exclude_tags: Iterable[str] = (),
        exclude_items: Iterable[str] = (),
    ) -> ItemRules:
        """Rules from plain lists (settings), tags folded to lower case."""
        return cls(
            frozenset(t.strip().casefold() for t in include_tags if t.strip()),
            frozenset(t.strip().casefold() for t in exclude_tags if t.strip()),
            frozenset(exclude_items),
        )

    def allows(self, item_id: str, tags: Sequence[str], *, available: bool = True) -> bool:
        """Whether an item with this id, tags and availability may be recommended."""
        if not available or item_id in self.exclude_items:
            return False
        if not (self.include_tags or self.exclude_tags):
            return True
        folded = {t.strip().casefold() for t in tags}
        if folded & self.exclude_tags:
            return False
        return not self.include_tags or bool(folded & self.include_tags)

    @property
    def digest(self) -> str:
        """A short fingerprint: a saved catalogue is adopted only under the same rules."""
        text = json.dumps(
            [sorted(self.include_tags), sorted(self.exclude_tags), sorted(self.exclude_items)]
        )
        return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()
