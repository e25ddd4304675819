"""Evaluated prompt prefixes kept in the KV cache for reuse, the least recently used first out.

The parallel decoder keeps several: a job's shared instructions, and on a server each finished
conversation, so that a client resending a growing conversation pays only for its new turn even
when other clients' conversations finish in between. Each prefix is a sequence of its own in a
KV stream; a request that starts like one gets a copy of its cells (llama_memory_seq_cp), and
evicting a prefix empties its stream.

The store does the bookkeeping only (which sequence holds which tokens, in what order they were
used); the decoder evaluates or copies the cells into the sequence ``reserve`` hands out.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Protocol, Sequence

from .llama.context import align_down


class _Cells(Protocol):
    def remove(self, seq: int, start: int, end: int = -1) -> bool: ...


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens a and b share."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def usable_prefix(held: Sequence[int], prompt: Sequence[int], limit: int) -> int:
    """How many evaluated tokens ``held`` can give ``prompt``: the tokens they share, at most
    ``limit``, cut to an aligned length (prompts are cut into decode calls only at aligned
    positions, so a prompt continued from a prefix is evaluated exactly as alone)."""
    return align_down(max(0, min(common_prefix(held, prompt), limit)))


class PrefixStore:
    """Prefixes held in sequences ``seqs`` of a context, within a budget of KV cells."""

    def __init__(self, ctx: _Cells, seqs: Sequence[int]) -> None:
        self._ctx = ctx
        self._free = list(reversed(seqs))
        self._held: OrderedDict[int, list[int]] = OrderedDict()  # seq -> tokens, oldest use first
        # seq -> how many of its tokens a newer prefix must share to make it redundant (a kept
        # conversation's prompt: its answer comes back re-encoded from text in the next turn)
        self._anchor: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._held)

    @property
    def cells(self) -> int:
        """KV cells the prefixes hold (counting cells two prefixes share twice: an upper bound)."""
        return sum(len(t) for t in self._held.values())

    def tokens(self) -> list[list[int]]:
        """The prefixes, least recently used first."""
        return [list(t) for t in self._held.values()]

    def find(self, prompt: Sequence[int], limit: int) -> tuple[int, int]:
        """The prefix that can give ``prompt`` the most tokens (usable_prefix): (sequence,
        tokens), (-1, 0) if none. A prefix found is marked as used."""
        best_seq, best = -1, 0
        for seq, held in self._held.items():
            n = usable_prefix(held, prompt, limit)
            if n > best:
                best_seq, best = seq, n
        if best_seq >= 0:
            self._held.move_to_end(best_seq)
        return best_seq, best

    def fit(self, budget: int) -> None:
        """Evict the least recently used prefixes until they hold at most ``budget`` cells."""
        while self._held and self.cells > budget:
            self._evict(next(iter(self._held)))

    def reserve(self, tokens: Sequence[int], budget: int, anchor: int | None = None) -> int | None:
        """A sequence to hold ``tokens`` as a new prefix (the caller fills its cells), or None
        when one already holds them all or they do not fit in ``budget`` cells.

        A prefix is only ever used up to an aligned length (``find``), so one that shares all
        of another's aligned length gives every prompt at least as much: the new one is not kept
        when an old one covers it that way, and old ones it covers (an earlier turn of the same
        conversation) are dropped. Others are evicted, least recently used first, until it fits.
        ``anchor``: keep this prefix only while no newer one shares its first ``anchor`` tokens
        (default: all of them)."""
        if not tokens or len(tokens) > budget:
            return None
        for seq, held in list(self._held.items()):
            shared = common_prefix(held, tokens)
            if shared >= align_down(len(tokens)):  # already held
                self._held.move_to_end(seq)
                return None
            if shared >= align_down(self._anchor.get(seq, len(held))):  # superseded by the new one
                self._evict(seq)
        while self._held and (not self._free or self.cells + len(tokens) > budget):
            self._evict(next(iter(self._held)))
        if not self._free:
            return None
        seq = self._free.pop()
        self._held[seq] = list(tokens)
        if anchor is not None:
            self._anchor[seq] = anchor
        return seq

    def drop(self, seq: int) -> None:
        """Forget a prefix whose cells could not be filled."""
        if seq in self._held:
            self._evict(seq)

    def clear(self) -> None:
        for seq in list(self._held):
            self._evict(seq)

    def _evict(self, seq: int) -> None:
        del self._held[seq]
        self._anchor.pop(seq, None)
        self._ctx.remove(seq, 0, -1)
        self._free.append(seq)
