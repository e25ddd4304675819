"""The store of shared prefixes: several kept at once, the least recently used evicted first,
within a budget of KV cells (bookkeeping tested with a recording context; the decoder's use of
it with the real llama.cpp in test_decoder_serving.py)."""
from __future__ import annotations

from chatglm3_cli.engine.llama.context import PROMPT_ALIGN
from chatglm3_cli.engine.prefixes import PrefixStore, common_prefix

A = PROMPT_ALIGN


class Cells:
    def __init__(self) -> None:
        self.removed: list[int] = []

    def remove(self, seq: int, start: int, end: int = -1) -> bool:
        assert (start, end) == (0, -1)
        self.removed.append(seq)
        return True


def toks(first: int, n: int) -> list[int]:
    return list(range(first, first + n))


def test_common_prefix():
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix([], [1]) == 0
    assert common_prefix([1, 2], [1, 2, 3]) == 2


def test_the_longest_match_wins_cut_to_an_aligned_length():
    store = PrefixStore(Cells(), [10, 11])
    a, b = toks(0, 3 * A), toks(0, A) + toks(1000, 2 * A)
    assert store.reserve(a, 10 * A) == 10 and store.reserve(b, 10 * A) == 11
    prompt = toks(0, 2 * A + 3) + [7]
    assert store.find(prompt, len(prompt) - 1) == (10, 2 * A)  # shares 2A+3 with a: cut to 2A
    assert store.find(toks(0, A) + toks(1000, A + 5), 10**6) == (11, 2 * A)
    assert store.find([999] * A, 10**6) == (-1, 0)
    assert store.find(prompt, A + 1) == (10, A)  # never past the limit


def test_least_recently_used_goes_first_when_the_budget_shrinks():
    cells = Cells()
    store = PrefixStore(cells, [5, 6, 7])
    for i, seq in enumerate([5, 6, 7]):
        assert store.reserve(toks(1000 * i, A), 3 * A) == seq
    store.find(toks(0, A), 10**6)  # the oldest is used again: 6 is now the least recent
    store.fit(2 * A)
    assert cells.removed == [6] and store.cells == 2 * A
    store.fit(0)
    assert sorted(cells.removed) == [5, 6, 7] and len(store) == 0


def test_a_new_prefix_evicts_for_room_and_reuses_the_sequence():
    cells = Cells()
    store = PrefixStore(cells, [1, 2])
    assert store.reserve(toks(0, A), 2 * A) == 1
    assert store.reserve(toks(100, A), 2 * A) == 2
    assert store.reserve(toks(200, A), 2 * A) == 1  # over budget (and out of sequences): 1 goes
    assert cells.removed == [1]
    assert store.tokens() == [toks(100, A), toks(200, A)]
    assert store.reserve(toks(300, 3 * A), 2 * A) is None  # bigger than the whole budget
    assert len(store) == 2


def test_a_conversation_that_grows_replaces_its_earlier_turn():
    cells = Cells()
    store = PrefixStore(cells, [1, 2])
    turn1 = toks(0, 2 * A)
    other = toks(500, A)
    assert store.reserve(turn1, 10 * A) == 1 and store.reserve(other, 10 * A) == 2
    turn2 = turn1 + toks(900, A)
    assert store.reserve(turn2, 10 * A) == 1  # turn 1 dropped: turn 2 covers it
    assert store.tokens() == [other, turn2]
    assert store.reserve(turn1, 10 * A) is None  # already held, as the start of turn 2
    assert store.tokens() == [other, turn2]


def test_what_a_prefix_can_give_is_its_aligned_length():
    # prefixes are used up to aligned lengths only: one sharing another's whole aligned length
    # gives every prompt as much, whatever follows (a re-tokenized answer, an ended turn)
    store = PrefixStore(Cells(), [1, 2])
    turn1 = toks(0, 2 * A + 3)  # its answer's last tokens will not come back the same way
    assert store.reserve(turn1, 10 * A) == 1
    turn2 = toks(0, 2 * A) + toks(900, A)
    assert store.reserve(turn2, 10 * A) == 1 and store.tokens() == [turn2]
    assert store.reserve(toks(0, 2 * A) + [5], 10 * A) is None
