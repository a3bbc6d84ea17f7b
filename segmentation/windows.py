"""Time windows cut from a shop's history: the backtest hold-out, the validation and the test windows.

segrec cannot assume two years of data. A window left unset is a share of the history
before it ends (a quarter by default), capped (a longer window adds little), and one too
short to say anything is skipped with a note rather than failing the run. A window the
user set wins; one that leaves too little history to learn from is an error naming the flag.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from segmentation import columns as C


class WindowError(ValueError):
    """A window or as-of date the data cannot serve, told in terms of the user's own inputs."""


@dataclass(frozen=True)
class History:
    """The span of a shop's clean purchases, and the as-of date the run treats as now."""

    first_purchase: dt.date
    last_purchase: dt.date
    as_of: dt.date
    as_of_given: bool  # by the user (--as-of), rather than the day after the last purchase

    @property
    def days(self) -> int:
        """Days of history before the as-of date."""
        return (self.as_of - self.first_purchase).days

    def days_before(self, end: dt.date) -> int:
        return (end - self.first_purchase).days

    def describe_as_of(self) -> str:
        if self.as_of_given:
            return f"the as-of date {self.as_of} you gave (--as-of)"
        return f"the as-of date {self.as_of} (the day after the last purchase; --as-of sets another)"

    def check(self) -> None:
        """The as-of date must leave some history before it, and the history must span more than one day."""
        if self.days < 1:
            raise WindowError(f"{self.describe_as_of()} is not after the first purchase ({self.first_purchase}): "
                              "there is nothing to learn from; give a later --as-of")
        if self.first_purchase == min(self.last_purchase, self.as_of - dt.timedelta(days=1)):
            raise WindowError(f"the purchases before {self.describe_as_of()} are all on one day ({self.first_purchase}): "
                              "segrec learns from customers coming back, so it needs purchases on more than one day")


def read_history(purchases, as_of: dt.date | None) -> History:
    """The history of ``purchases`` (one aggregate); ``as_of`` None means the day after the last purchase."""
    from pyspark.sql import functions as F

    row = purchases.agg(F.min(C.TIMESTAMP).alias("first"), F.max(C.TIMESTAMP).alias("last")).first()
    if row["first"] is None:
        raise WindowError("there are no clean purchases: see the ingest summary (output/ingest/summary.json) for where the rows went")
    first, last = row["first"].date(), row["last"].date()
    return History(first_purchase=first, last_purchase=last, as_of=as_of or last + dt.timedelta(days=1), as_of_given=as_of is not None)


@dataclass(frozen=True)
class WindowRule:
    """How long a window is when the user does not say: ``share`` of the history before it, at most ``max_days``.

    Below ``min_days`` the window is skipped; a window the user sets must leave ``min_days``
    of history before it to learn from.
    """

    name: str  # "backtest hold-out"
    flag: str  # the command-line flag that sets its length
    share: float
    max_days: int
    min_days: int

    def __post_init__(self):
        if not 0 < self.share < 1:
            raise WindowError(f"the {self.name}'s share of the history must be between 0 and 1, got {self.share}")
        if not 1 <= self.min_days <= self.max_days:
            raise WindowError(f"the {self.name}'s shortest length ({self.min_days} days) must be at least 1 and at most "
                              f"its longest ({self.max_days} days)")

    @property
    def history_needed(self) -> int:
        """The fewest days of history for which the window is not skipped."""
        return math.ceil(self.min_days / self.share)


@dataclass(frozen=True)
class Window:
    """``days`` days ending the day before ``end``; ``days`` None when the window was skipped, ``reason`` says why either way."""

    name: str
    end: dt.date  # the first day after the window
    days: int | None
    reason: str

    @property
    def skipped(self) -> bool:
        return self.days is None

    @property
    def start(self) -> dt.date | None:
        return None if self.days is None else self.end - dt.timedelta(days=self.days)

    def as_dict(self) -> dict:
        start = self.start
        return {"name": self.name, "skipped": self.skipped, "days": self.days, "start": start and start.isoformat(),
                "end": (self.end - dt.timedelta(days=1)).isoformat(), "reason": self.reason}

    def describe(self) -> str:
        return describe_window(self.as_dict())


def describe_window(window: dict) -> str:
    """One line for a window in ``Window.as_dict``'s shape (as run.json and the manifests hold it)."""
    if window["skipped"]:
        return f"{window['name']} skipped: {window['reason']}"
    return f"{window['name']} {window['start']}..{window['end']} ({window['days']} days: {window['reason']})"


def choose_window(history: History, rule: WindowRule, *, days: int | None = None, end: dt.date | None = None) -> Window:
    """The window of ``rule`` ending the day before ``end`` (default: the as-of date): ``days`` long when given, else from the history."""
    end = end or history.as_of
    available = history.days_before(end)
    ends = "the as-of date" if end == history.as_of else str(end)
    if days is not None:
        if days < 1:
            raise WindowError(f"{rule.flag} must be at least 1 day, got {days}")
        if available - days < rule.min_days:
            longest = available - rule.min_days
            advice = (f"give {rule.flag} at most {longest}, or leave it out" if longest >= 1 else f"leave {rule.flag} out")
            raise WindowError(
                f"{rule.flag} {days} leaves {max(0, available - days)} days of history before the {rule.name} "
                f"(the first purchase is on {history.first_purchase}, and the window ends before {history.describe_as_of()}"
                f"{'' if end == history.as_of else f' less the windows after it, on {end}'}); at least {rule.min_days} are needed: "
                f"{advice} and segrec chooses a window from the history")
        return Window(rule.name, end, days, f"set by {rule.flag}")
    chosen = min(rule.max_days, math.floor(available * rule.share))
    if chosen < rule.min_days:
        return Window(rule.name, end, None,
                      f"{available} days of history before {ends} ({end}); a {rule.name} of at least {rule.min_days} days "
                      f"needs {rule.history_needed} ({rule.flag} sets one by hand)")
    capped = f", capped at {rule.max_days}" if chosen == rule.max_days and available * rule.share > rule.max_days else ""
    return Window(rule.name, end, chosen, f"{rule.share:.0%} of the {available} days of history before {ends}{capped}")
