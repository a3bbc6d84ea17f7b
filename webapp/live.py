"""Lists that follow what a shopper does now: the batch list fused with the "also bought" neighbours of their recent events.

Plain Python over rows already read from the store and the app's events, so the API computes a list in
the request that follows an event (no Spark), and an offline replay can run exactly the same code.

Scores are rank-based (reciprocal rank, ``1 / (RANK_CONSTANT + rank)``), so the batch model's scores and
the neighbour lists' scores, which live on different scales, add up fairly. A shopper's events each weigh
their type's weight halved every ``half_life_hours``; an event's item counts as its own nearest neighbour
(rank 0: a viewed or carted item is a strong hint at the next purchase), then its neighbours by rank; a known
shopper's ``for_you`` takes the items alone.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

EVENT_WEIGHTS = {"view": 1.0, "cart": 2.0, "purchase": 3.0}
RANK_CONSTANT = 10
EVENTS_SOURCE = "events"  # the source named for items that the shopper's events brought in
EXPLORED_SOURCE = "new"  # a new item placed in an exploration slot: near the shopper's items in words
EXPLORATION_ANCHORS = 5  # the head of a shopper's list whose nearest new items explore, after their events' items


@dataclass(frozen=True, kw_only=True)
class LiveSettings:
    # an event weighs half as much two weeks later: returning shoppers' purchase days are weeks apart (the replay measures it)
    half_life_hours: float = 336.0
    event_share: float = 0.5  # of a known shopper's fused score; their batch list has the rest
    new_shopper_event_share: float = 0.9  # of the score of a shopper the batch does not know; trending has the rest
    # for_you keeps a just-bought item at this fraction of its score, the demotion halving every few hours: the same
    # item is rarely bought twice in a visit, but often again on a later day (the replay evaluation measures both)
    bought_demotion: float = 0.2
    demotion_half_life_hours: float = 6.0
    # of the slots of discover and "also bought" given to new items near the shopper's (or the item's) in words
    exploration_share: float = 0.1

    def __post_init__(self):
        for name in ("half_life_hours", "demotion_half_life_hours"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("event_share", "new_shopper_event_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be from 0 to 1, got {getattr(self, name)}")
        if not 0 <= self.bought_demotion <= 1:
            raise ValueError(f"bought_demotion must be from 0 to 1, got {self.bought_demotion}")
        if not 0 <= self.exploration_share <= 0.5:
            raise ValueError(f"exploration_share must be from 0 to 0.5, got {self.exploration_share}")


@dataclass(frozen=True)
class Event:
    item_id: str
    type: str
    timestamp: dt.datetime  # aware


@dataclass(frozen=True)
class Ranked:
    item_id: str
    score: float
    source: str


def _reciprocal(rank: int) -> float:
    return 1.0 / (RANK_CONSTANT + rank)


def _age_hours(event: Event, now: dt.datetime) -> float:
    return max((now - event.timestamp).total_seconds(), 0.0) / 3600  # a time in the future counts as now


def event_weights(events: list[Event], now: dt.datetime, settings: LiveSettings) -> dict[str, float]:
    """Item -> summed weight of the shopper's events on it, each decayed by its age at ``now``."""
    weights: dict[str, float] = {}
    for event in events:
        decay = 0.5 ** (_age_hours(event, now) / settings.half_life_hours)
        weights[event.item_id] = weights.get(event.item_id, 0.0) + EVENT_WEIGHTS[event.type] * decay
    return weights


def demotions(events: list[Event], now: dt.datetime, settings: LiveSettings) -> dict[str, float]:
    """Bought item -> the factor its for_you score is kept at: ``bought_demotion`` just after the purchase, back towards 1."""
    factors: dict[str, float] = {}
    for event in events:
        if event.type == "purchase":
            fading = 0.5 ** (_age_hours(event, now) / settings.demotion_half_life_hours)
            factors[event.item_id] = min(factors.get(event.item_id, 1.0), 1 - (1 - settings.bought_demotion) * fading)
    return factors


def event_scores(weights: dict[str, float], neighbours: dict[str, list[str]]) -> dict[str, float]:
    """Item -> the events' pull on it: each event item and its neighbours by rank, weighted. Divided by the total weight
    once it passes one fresh view, so many events pull no harder than one list; old events alone pull less."""
    scale = max(sum(weights.values()), EVENT_WEIGHTS["view"])
    scores: dict[str, float] = {}
    for item, weight in weights.items():
        for rank, candidate in enumerate([item, *neighbours.get(item, [])]):
            scores[candidate] = scores.get(candidate, 0.0) + weight / scale * _reciprocal(rank)
    return scores


def live_list(list_name: str, *, batch: list[Ranked], events: list[Event], neighbours: dict[str, list[str]], bought: set[str],
              popular: list[Ranked], n: int, now: dt.datetime, known: bool = True, settings: LiveSettings = LiveSettings(),
              excluded: frozenset[str] | set[str] = frozenset()) -> list[Ranked]:
    """The shopper's ``list_name`` list of up to ``n`` items, each with the source that placed it.

    ``batch`` is their stored list in rank order (trending for a shopper the batch does not know: ``known`` False, when
    their events lead), ``events`` their recent
    events, ``neighbours`` each event item's "also bought" items in rank order, ``bought`` every item they have bought
    (before the batch or since), ``popular`` the list to top up from, ``excluded`` items no list may hold (merchandising
    rules). ``discover`` never holds a bought item; ``buy_again`` holds bought items only; ``for_you`` keeps just-bought
    items, demoted for a few hours.
    """
    purchased_now = {event.item_id for event in events if event.type == "purchase"}
    weights = event_weights(events, now, settings)
    if list_name == "buy_again":  # what was bought, the latest purchases pulling hardest; neighbours are not bought items
        pulled = event_scores({item: weight for item, weight in weights.items() if item in purchased_now}, {})
    elif list_name == "for_you" and known:
        # a known shopper's own items come back; their neighbours go to discover: the batch list already holds better
        # guesses than the neighbours (the replay evaluation measures it on two shops)
        pulled = event_scores(weights, {})
    else:
        pulled = event_scores(weights, neighbours)
    event_share = settings.event_share if known else settings.new_shopper_event_share
    fused: dict[str, float] = {}
    sources: dict[str, str] = {}
    for rank, row in enumerate(batch, start=1):
        fused[row.item_id] = (1 - event_share) * _reciprocal(rank)
        sources[row.item_id] = row.source
    for item, pull in pulled.items():
        fused[item] = fused.get(item, 0.0) + event_share * pull
        sources[item] = f"{sources[item]}+{EVENTS_SOURCE}" if item in sources else EVENTS_SOURCE
    left_out = set(excluded) | (bought | purchased_now if list_name == "discover" else set())
    for item in left_out:
        fused.pop(item, None)
    if list_name == "for_you":
        for item, factor in demotions(events, now, settings).items():
            if item in fused:
                fused[item] *= factor
    ranked = [Ranked(item, score, sources[item]) for item, score in sorted(fused.items(), key=lambda pair: (-pair[1], pair[0]))][:n]
    if len(ranked) < n and list_name != "buy_again":  # topped up from popularity, below everything fused
        taken = {row.item_id for row in ranked} | left_out
        floor = min((row.score for row in ranked), default=1.0)
        extra = [row for row in popular if row.item_id not in taken][:n - len(ranked)]
        ranked += [Ranked(row.item_id, floor * _reciprocal(rank) / _reciprocal(0), row.source) for rank, row in enumerate(extra, start=1)]
    return ranked


def slots(n: int, share: float, available: int) -> list[int]:
    """The 0-based positions that ``share`` of a list of ``n`` (rounded) takes, spread evenly, the first a little way
    down so the shopper's own best match leads; the first ``available`` of those when fewer items are there to fill them."""
    count = math.floor(n * share + 0.5)
    return [min(n - 1, math.floor((slot + 0.5) * n / count)) for slot in range(count)][:available]


def with_inserted(ranked: list[Ranked], items: list[str], share: float, n: int, source: str) -> list[Ranked]:
    """``ranked`` (up to ``n`` items) with the first of ``items`` in ``share`` of the slots, under ``source``, the others
    moved down; an inserted item already listed moves to its slot. Each takes the score of the row it displaced."""
    positions = slots(n, share, len(items))
    chosen = items[:len(positions)]
    result = [row for row in ranked if row.item_id not in chosen][:n - len(chosen)]
    for position, item in zip(positions, chosen):
        at = min(position, len(result))
        score = result[at].score if at < len(result) else (result[-1].score if result else 1.0)
        result.insert(at, Ranked(item, score, source))
    return result


def exploration_anchors(events: list[Event], ranked: list[Ranked]) -> list[str]:
    """The items whose nearest new items fill the exploration slots: the shopper's event items, then their list's head."""
    return list(dict.fromkeys([event.item_id for event in events] + [row.item_id for row in ranked[:EXPLORATION_ANCHORS]]))


def with_exploration(ranked: list[Ranked], *, anchors: list[str], nearest_new: dict[str, list[str]], arrivals: list[str],
                     left_out: set[str], n: int, settings: LiveSettings) -> list[Ranked]:
    """``ranked`` with ``settings.exploration_share`` of its slots given to new items: those nearest the ``anchors`` in
    words (``nearest_new``: item -> new items by rank; summed reciprocal ranks), then the new ``arrivals``; never one
    in ``left_out`` or already listed."""
    scores: dict[str, float] = {}
    for anchor in anchors:
        for rank, item in enumerate(nearest_new.get(anchor, []), start=1):
            scores[item] = scores.get(item, 0.0) + _reciprocal(rank)
    taken = left_out | {row.item_id for row in ranked}
    near = [item for item, _ in sorted(scores.items(), key=lambda pair: (-pair[1], pair[0])) if item not in taken]
    candidates = near + [item for item in arrivals if item not in taken and item not in scores]
    return with_inserted(ranked, candidates, settings.exploration_share, n, EXPLORED_SOURCE)
