"""Per-process cache of diagnoses, keyed by the store, its DuckLake snapshot and the arguments.

A diagnosis reads only what the store holds, so the same arguments over the same snapshot give the
same answer: the dashboard re-rendering an incident, or ``incidents`` then ``explain`` of the same
breach, pay one snapshot look-up (~3 ms) instead of the queries. Any write (append, replace,
maintain) moves the snapshot, and the entry is not used again. Bounded (least recently used first).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable

from hopscope.diagnosis.model import Diagnosis
from hopscope.model import ReadStore
from hopscope.store import current_snapshot, store_identity


class DiagnosisCache:
    """Diagnoses by (store, snapshot, arguments); ``max_entries`` kept, least recently used dropped."""

    def __init__(self, max_entries: int = 256) -> None:
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._items: OrderedDict[Hashable, tuple[object, Diagnosis]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def key(self, store: ReadStore, args: Hashable) -> Hashable | None:
        """The entry's key, or None when this store cannot be cached (no folder, no snapshot)."""

        # the catalog's mtime too: a store regenerated in place may get its inode and snapshot ids back
        ident = store_identity(store, with_mtime=True)
        if ident is None:
            return None
        snap = current_snapshot(store)
        if snap is None:
            return None
        return (ident, snap, args)

    def get(self, key: Hashable) -> Diagnosis | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item[1]

    def put(self, key: Hashable, keep_alive: object, value: Diagnosis) -> None:
        """Store ``value``; ``keep_alive`` (objects whose id() is in the key) lives as long as the entry."""
        with self._lock:
            self._items[key] = (keep_alive, value)
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)


CACHE = DiagnosisCache()

__all__ = ["CACHE", "DiagnosisCache"]
