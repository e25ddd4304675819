"""Row padding decided from measured step times (the decision logic, with made-up times; the
decoder's padded steps run on real llama.cpp in test_exactness.py)."""
from __future__ import annotations

from chatglm3_cli.engine.speculation import SpecPolicy
from chatglm3_cli.engine.step_costs import RowPadding, StepTimes


def _time(times: StepTimes, rows: int, seconds: float, n: int = StepTimes.EXPLORE) -> None:
    for _ in range(n):
        times.timed(rows, seconds)


def test_it_measures_k_rows_then_the_padded_count_then_decides():
    times = StepTimes()
    pad = RowPadding(times)
    assert pad.rows(4) == 4 and pad.rows(8) == 8  # already whole groups
    assert pad.rows(3) == 3  # nothing known: time 3 rows first
    _time(times, 3, 0.721)
    assert pad.rows(3) == 4  # then 4
    _time(times, 4, 0.700)
    assert pad.rows(3) == 3  # 0.700 is not 5% below 0.721
    _time(times, 4, 0.524, n=20)  # (one run of scripts/bench_steps.py: 615 ms for 3 rows, 524 for 4)
    assert pad.rows(3) == 4


def test_a_clear_loss_is_never_retried_a_close_call_is_rechecked():
    times = StepTimes()
    _time(times, 1, 0.248)
    _time(times, 4, 0.677)  # 2.7x: padding one row to four loses by far
    pad = RowPadding(times)
    assert all(pad.rows(1) == 1 for _ in range(10 * RowPadding.RECHECK))
    _time(times, 2, 0.500)
    _time(times, 4, 0.520, n=30)  # close: timed again now and then
    choices = [pad.rows(2) for _ in range(2 * RowPadding.RECHECK)]
    assert choices.count(4) == 2 and choices.count(2) == 2 * RowPadding.RECHECK - 2


def test_one_row_is_padded_only_on_the_evidence_of_real_four_row_steps():
    times = StepTimes()
    pad = RowPadding(times)
    _time(times, 1, 0.338)
    _time(times, 2, 0.504)
    assert pad.rows(1) == 1  # not tried: it would cost three 4-row steps to find out
    assert pad.rows(2) == 2  # nor two rows
    _time(times, 4, 0.281)  # real 4-row steps (four sequences ran); an AMX CPU measured this
    assert pad.rows(1) == 4 and pad.rows(2) == 4


def test_modes_on_and_off():
    times = StepTimes()
    assert RowPadding(times, "on").rows(5) == 8 and RowPadding(times, "on").rows(1) == 4
    _time(times, 3, 1.0)
    _time(times, 4, 0.1)
    assert RowPadding(times, "off").rows(3) == 3


def test_speculation_reads_the_same_step_times():
    times = StepTimes()
    policy = SpecPolicy(times)
    _time(times, 1, 0.1)
    _time(times, 4, 0.4)  # 4 rows cost 4 steps: 3 drafts at any acceptance rate cannot pay
    assert policy.want(1, 1, 3) is False


def test_where_drafting_never_pays_its_retries_back_off():
    times = StepTimes()
    policy = SpecPolicy(times)
    _time(times, 1, 0.248)
    _time(times, 4, 0.677)  # two AVX2 cores: 3 drafts pay only above ~58% acceptance
    policy.rate = 0.3
    tries = [i for i in range(4000) if policy.want(1, 1, 3)]
    # tried at the 32nd declined draft, then 64 and 128 later, ... not every 32nd time
    assert tries[:3] == [31, 31 + 64, 31 + 64 + 128]
    assert len(tries) <= 7


def test_filler_rows_make_one_micro_batch_of_consecutive_streams():
    from chatglm3_cli.engine.decoder import align_rows

    assert align_rows([0, 1, 2], [3], 3) == []  # consecutive already
    assert align_rows([0, 2, 3], [1], 3) == [1]  # a gap: a row in the empty stream
    assert align_rows([0, 3], [1], 2) == []  # a gap in a busy stream: nothing to gain
    assert align_rows([0, 1, 2], [3, 4], 4) == [3]  # padding to four, beside the rows
    assert align_rows([1, 2, 3], [0], 4) == [0]
    assert align_rows([0, 1], [3], 4) == []  # padding only in full, and only adjacent
    assert align_rows([0, 2], [1, 3, 5], 4) == [1, 3]
    assert align_rows([], [0, 1], 4) == []


def test_stream_layout_pads_only_where_padding_can_happen():
    from chatglm3_cli.engine.decoder import stream_layout

    assert stream_layout(4, 2, "auto") == (0, 2)  # 3 rows of 4: a free stream pads
    assert stream_layout(3, 2, "auto") == (1, 2)  # 3 rows of 3: one pad stream
    assert stream_layout(1, 2, "on") == (3, 2)
    assert stream_layout(3, 2, "off") == (0, 2)
    assert stream_layout(2, 0, "auto") == (0, 1)  # always one for a job's shared prompt
