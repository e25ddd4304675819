"""Prompt-lookup drafts (chatglm3_cli/engine/speculation.py)."""
from __future__ import annotations

from chatglm3_cli.engine.speculation import PromptLookup


def test_draft_follows_the_latest_earlier_occurrence_of_the_longest_suffix():
    lk = PromptLookup([1, 2, 3, 4, 5, 9, 2, 3, 7, 8])
    lk.extend([2, 3])
    # "2 3" occurred twice before: the latest was followed by 7 8
    assert lk.draft(2) == [7, 8]
    lk.extend([4])
    # "2 3 4" only at the start: 5 9 2 follow it there
    assert lk.draft(3) == [5, 9, 2]


def test_no_draft_without_a_match_or_for_a_single_token():
    lk = PromptLookup([1, 2, 3])
    assert lk.draft(3) == []
    lk.extend([9, 1])  # "9 1" never occurred; a single token is not enough
    assert lk.draft(3) == []
    assert lk.draft(0) == []


def test_the_current_suffix_never_matches_itself():
    lk = PromptLookup([5, 5])
    assert lk.draft(4) == []  # "5 5" ends at the last token: there is no earlier occurrence
    lk.extend([5])
    assert lk.draft(4) == [5]  # "5 5" at 0-1 was followed by the 5 at 2
