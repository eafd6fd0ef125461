"""The time left of an evaluation (longctx.evaluate.pace): remaining samples x length at the timed cells' rate."""

from longctx.evaluate.pace import Pace, duration


def test_time_left_scales_the_timed_rate_to_the_remaining_token_work():
    cells = [("a", 4096), ("b", 4096), ("a", 16384), ("b", 16384)]
    pace = Pace(cells, samples=10)
    assert pace.seconds_left() is None  # nothing timed yet
    pace.done(("a", 4096), seconds=8.0)  # 40,960 tokens of work in 8 s
    assert pace.seconds_left() == (4096 + 2 * 16384) * 10 * 8.0 / (4096 * 10)  # 72 s
    pace.done(("b", 4096))  # from the journal: done, teaches nothing
    assert pace.seconds_left() == 2 * 16384 * 10 * 8.0 / (4096 * 10)
    pace.done(("a", 16384), seconds=40.0)
    assert pace.seconds_left() == 16384 * 10 * 48.0 / (4096 * 10 + 16384 * 10)
    pace.done(("b", 16384), seconds=40.0)
    assert pace.seconds_left() == 0
    pace.done(("b", 16384), seconds=1.0)  # a cell counted twice changes nothing
    assert pace.work == (4096 + 2 * 16384) * 10


def test_duration_words():
    assert [duration(s) for s in (9.4, 59, 61, 3599, 3600, 11_100)] == [
        "about 9 s", "about 59 s", "about 1 min", "about 1 h 00 min", "about 1 h 00 min", "about 3 h 05 min",
    ]  # fmt: skip
