import datetime as dt

import pytest

from segmentation.windows import History, WindowError, WindowRule, choose_window

HOLDOUT = WindowRule(name="backtest hold-out", flag="--holdout-days", share=0.25, max_days=92, min_days=14)


def history(days: int, given: bool = True) -> History:
    """``days`` of purchases ending the day before the as-of date 2001-02-01 (the grocery shop of issue 28 had 92)."""
    as_of = dt.date(2001, 2, 1)
    return History(first_purchase=as_of - dt.timedelta(days=days), last_purchase=as_of - dt.timedelta(days=1), as_of=as_of,
                   as_of_given=given)


def test_a_window_left_unset_is_a_quarter_of_the_history():
    window = choose_window(history(92), HOLDOUT)
    assert (window.days, window.start, window.end) == (23, dt.date(2001, 1, 9), dt.date(2001, 2, 1))
    assert window.reason == "25% of the 92 days of history before the as-of date"
    assert window.as_dict() == {"name": "backtest hold-out", "skipped": False, "days": 23, "start": "2001-01-09",
                                "end": "2001-01-31", "reason": window.reason}


def test_a_long_history_is_capped_at_the_longest_window():
    window = choose_window(history(740), HOLDOUT)
    assert window.days == 92 and window.reason == "25% of the 740 days of history before the as-of date, capped at 92"


def test_a_window_ending_before_the_as_of_date_counts_the_history_before_its_end():
    window = choose_window(history(400), HOLDOUT, end=dt.date(2000, 12, 1))
    assert window.days == 84 and window.reason == "25% of the 338 days of history before 2000-12-01"


def test_too_short_a_history_skips_the_window_and_says_how_much_it_needs():
    window = choose_window(history(55), HOLDOUT)
    assert window.skipped and window.start is None
    assert window.reason == ("55 days of history before the as-of date (2001-02-01); a backtest hold-out of at least 14 days needs 56 "
                             "(--holdout-days sets one by hand)")
    assert not choose_window(history(56), HOLDOUT).skipped


def test_a_window_the_user_set_wins():
    window = choose_window(history(92), HOLDOUT, days=30)
    assert window.days == 30 and window.reason == "set by --holdout-days"


def test_a_window_the_user_set_that_leaves_too_little_history_names_the_flag_and_the_as_of_date_they_gave():
    with pytest.raises(WindowError) as raised:
        choose_window(history(92), HOLDOUT, days=92)
    assert str(raised.value) == (
        "--holdout-days 92 leaves 0 days of history before the backtest hold-out (the first purchase is on 2000-11-01, and the "
        "window ends before the as-of date 2001-02-01 you gave (--as-of)); at least 14 are needed: give --holdout-days at most 78, "
        "or leave it out and segrec chooses a window from the history")


def test_the_default_as_of_date_is_named_as_such():
    with pytest.raises(WindowError, match=r"the as-of date 2001-02-01 \(the day after the last purchase; --as-of sets another\)"):
        choose_window(history(20, given=False), HOLDOUT, days=10)


@pytest.mark.parametrize("days", [0, -3])
def test_a_window_must_be_a_day_or_more(days):
    with pytest.raises(WindowError, match=f"--holdout-days must be at least 1 day, got {days}"):
        choose_window(history(92), HOLDOUT, days=days)


def test_an_as_of_date_not_after_the_first_purchase_is_an_error_naming_it():
    early = History(first_purchase=dt.date(2001, 2, 1), last_purchase=dt.date(2001, 5, 1), as_of=dt.date(2001, 2, 1), as_of_given=True)
    with pytest.raises(WindowError) as raised:
        early.check()
    assert str(raised.value) == ("the as-of date 2001-02-01 you gave (--as-of) is not after the first purchase (2001-02-01): "
                                 "there is nothing to learn from; give a later --as-of")


@pytest.mark.parametrize("share, min_days, max_days", [(0.0, 14, 92), (1.0, 14, 92), (0.25, 0, 92), (0.25, 30, 20)])
def test_a_rule_that_cannot_work_is_refused(share, min_days, max_days):
    with pytest.raises(WindowError):
        WindowRule(name="test window", flag="--test-days", share=share, max_days=max_days, min_days=min_days)
