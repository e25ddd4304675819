"""A least-recently-used cache bounded by the bytes it holds, not by its number of entries.

Grammars made from client schemas vary from a few hundred bytes to hundreds of kilobytes: a
cache of 256 entries could hold gigabytes. Thread-safe: the server fills it from worker threads.
"""
from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from typing import Any, Hashable


def _size(value: Any) -> int:
    if isinstance(value, (str, bytes)):
        return len(value) if isinstance(value, bytes) else len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, BaseException):
        return sum(_size(a) for a in value.args) + 64
    return sys.getsizeof(value)


class ByteLRU:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable) -> Any:
        with self._lock:
            hit = self._items.get(key)
            if hit is None:
                return None
            self._items.move_to_end(key)
            return hit[0]

    def put(self, key: Hashable, value: Any) -> None:
        """Keep value (an entry larger than the whole budget is not kept)."""
        cost = _size(key) + _size(value)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.bytes -= old[1]
            if cost > self.max_bytes:
                return
            self._items[key] = (value, cost)
            self.bytes += cost
            while self.bytes > self.max_bytes:
                _, (_, freed) = self._items.popitem(last=False)
                self.bytes -= freed
