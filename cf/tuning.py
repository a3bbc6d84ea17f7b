"""ALS settings per value segment, and TIFU-KNN's, tuned on a validation window within a time budget.

Coordinate search: from the first value listed for each parameter, each parameter in turn is
tried at each of its values with the others held at the best found so far; a
change is kept only when it raises NDCG@k in the validation window: ALS on each
segment's ``discover`` list (items new to the customer), TIFU-KNN on ``for_you``
(all purchases), the list it is made for. The budget is shared out over the
segments in order; time a segment does not use passes to the next. Each search
runs at least ``min_trials`` trials whatever the clock says, so a slow machine
still tunes. Every trial is recorded, so the manifest shows what was tried and
what it scored, not only what won.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from dataclasses import dataclass

from cf.als import ALSRecommender
from cf.evaluation import ranking_metrics
from cf.ids import IdMapping
from cf.interactions import RecommendationError, interactions_by_half_life
from cf.tifu import TifuRecommender, TifuSettings
from segmentation import columns as C

ALL_SEGMENTS = "all"  # the global model's "segment", and every customer in metrics


@dataclass(frozen=True)
class ALSSettings:
    rank: int = 32
    reg_param: float = 0.1
    alpha: float = 10.0
    max_iter: int = 10
    half_life_days: float = 0.0  # 0: no time decay

    def model_settings(self) -> dict:
        return {"rank": self.rank, "reg_param": self.reg_param, "alpha": self.alpha, "max_iter": self.max_iter}


@dataclass(frozen=True)
class TuningConfig:
    """Values to try per parameter; the first of each is where the search starts (and all it uses with no budget)."""

    budget_seconds: float = 240.0
    rank: tuple[int, ...] = (32, 16, 64)
    reg_param: tuple[float, ...] = (0.1, 0.01, 1.0)
    alpha: tuple[float, ...] = (10.0, 1.0, 40.0)
    half_life_days: tuple[float, ...] = (0.0, 180.0, 365.0)
    max_iter: tuple[int, ...] = (10, 20)
    tifu_groups: tuple[int, ...] = (3, 7)
    tifu_alpha: tuple[float, ...] = (0.7, 0.9)
    min_trials: int = 3  # per search, even past the budget; 1 keeps the first settings when the budget is spent

    def __post_init__(self):
        for name in ("rank", "reg_param", "alpha", "half_life_days", "max_iter", "tifu_groups", "tifu_alpha"):
            values = getattr(self, name)
            if not values:
                raise RecommendationError(f"tuning.{name} needs at least one value")
        if self.budget_seconds < 0:
            raise RecommendationError(f"tuning.budget_seconds must be 0 or more, got {self.budget_seconds}")
        if self.min_trials < 1:
            raise RecommendationError(f"tuning.min_trials must be 1 or more, got {self.min_trials}")

    def start(self) -> ALSSettings:
        return ALSSettings(**{name: values[0] for name, values in self.grid()})

    def grid(self):
        """(parameter, values) in the order the search visits them: the strongest levers first."""
        return [(name, getattr(self, name)) for name in ("alpha", "reg_param", "rank", "half_life_days", "max_iter")]

    def tifu_start(self) -> TifuSettings:
        return TifuSettings(groups=self.tifu_groups[0], alpha=self.tifu_alpha[0])

    def tifu_grid(self):
        return [("groups", self.tifu_groups), ("alpha", self.tifu_alpha)]


@dataclass
class Trial:
    settings: ALSSettings | TifuSettings
    ndcg: float
    seconds: float


@dataclass
class SegmentTuning:
    segment: str
    customers: int  # validation customers the trials were scored on
    trials: list[Trial]

    @property
    def best(self) -> Trial:
        return max(self.trials, key=lambda trial: trial.ndcg)

    def as_dict(self) -> dict:
        best = self.best
        return {
            "chosen": dataclasses.asdict(best.settings), "validation_ndcg": best.ndcg,
            "default_ndcg": self.trials[0].ndcg, "validation_customers": self.customers, "trials_run": len(self.trials),
            "trials": [{**dataclasses.asdict(t.settings), "ndcg": t.ndcg, "seconds": t.seconds} for t in self.trials],
        }


class InteractionCache:
    """Training interactions for each half-life named up front (0: no decay), cached and shared by every model and trial.

    They come from one pass over the purchases: each half-life is one more column
    of the same grouping, where a pass per half-life would group them all again.
    """

    def __init__(self, purchases, as_of: dt.date, half_lives):
        self._columns = {days: f"_strength_{position}" for position, days in enumerate(sorted({days or 0.0 for days in half_lives}))}
        self._frame = interactions_by_half_life(
            purchases, as_of=as_of, half_lives={column: days or None for days, column in self._columns.items()}).cache()

    def get(self, settings: ALSSettings):
        return self.with_half_life(settings.half_life_days)

    def with_half_life(self, days: float):
        """customer_id, item_id, strength, last_purchase, with ``days`` of half-life."""
        from pyspark.sql import functions as F

        column = self._columns.get(days or 0.0)
        if column is None:
            raise RecommendationError(f"no interactions with a half-life of {days} days were asked for: "
                                      f"only {', '.join(map(str, self._columns))}")
        return self._frame.select(C.CUSTOMER_ID, C.ITEM_ID, F.col(column).alias(C.STRENGTH), C.LAST_PURCHASE)

    def release(self) -> None:
        self._frame.unpersist()


def tune(train, relevant, segments, *, as_of: dt.date, config: TuningConfig = TuningConfig(), k: int = 10,
         segment_names: list[str], clock=time.monotonic, echo=None) -> dict[str, SegmentTuning]:
    """Search ALS settings for each of ``segment_names`` (``ALL_SEGMENTS`` means all customers).

    train: purchases before ``as_of``; relevant: customer_id, item_id of the new
    items each warm customer bought in the validation window; segments:
    customer_id, segment. Returns one ``SegmentTuning`` per segment, its first
    trial being ``config.start()``. ``echo``, when given, is told of every trial.
    """
    from pyspark.sql import functions as F

    cache = InteractionCache(train, as_of, config.half_life_days)
    deadline = clock() + config.budget_seconds
    results = {}
    try:
        for position, segment in enumerate(segment_names):
            if segment == ALL_SEGMENTS:
                members = segments.select(C.CUSTOMER_ID)
            else:
                members = segments.where(F.col(C.SEGMENT) == segment).select(C.CUSTOMER_ID)
            target = relevant.join(members, C.CUSTOMER_ID).cache()
            customers = target.select(C.CUSTOMER_ID).distinct()
            # Every trial trains on the same pairs (only their strengths differ): number them once, not per trial.
            pairs = cache.get(config.start()).join(members, C.CUSTOMER_ID)
            ids = {"customer_ids": IdMapping.build(pairs, C.CUSTOMER_ID, C.CUSTOMER_INDEX).cache_frame(),
                   "item_ids": IdMapping.build(pairs, C.ITEM_ID, C.ITEM_INDEX).cache_frame()}
            # Whatever earlier segments left of the budget is shared by this one and those after it.
            share_end = clock() + max(0.0, deadline - clock()) / (len(segment_names) - position)

            def score(settings: ALSSettings, changed: str) -> Trial:
                started = clock()
                fitted = ALSRecommender(**settings.model_settings()).fit_numbered(cache.get(settings).join(members, C.CUSTOMER_ID), **ids)
                recs = fitted.recommend(customers, k, exclude_seen=True)
                ndcg = ranking_metrics(recs, target, k=k, catalogue_size=1)[0]["ndcg"] or 0.0
                trial = Trial(settings=settings, ndcg=float(ndcg), seconds=round(clock() - started, 1))
                if echo:
                    echo(f"    tuning {segment} ({position + 1}/{len(segment_names)}): {changed}, NDCG@{k} {trial.ndcg:.3f} "
                         f"in {trial.seconds:.0f}s; {max(0.0, deadline - clock()):.0f}s of the budget left")
                return trial

            trials = coordinate_search(config.start(), config.grid(), score, ends=share_end, min_trials=config.min_trials, clock=clock)
            results[segment] = SegmentTuning(segment=segment, customers=customers.count(), trials=trials)
            target.unpersist()
            for mapping in ids.values():
                mapping.frame.unpersist()
    finally:
        cache.release()
    return results


def coordinate_search(start, grid, score, *, ends: float, min_trials: int, clock=time.monotonic) -> list[Trial]:
    """Trials from ``start``, each parameter of ``grid`` in turn at each of its values, the others at the best so far.

    ``score(settings, what_changed)`` runs one trial. It stops at ``ends`` (by ``clock``) once ``min_trials`` have run.
    """
    trials = [score(start, "first settings")]
    best = trials[0]
    for name, values in grid:
        for value in values:
            if clock() >= ends and len(trials) >= min_trials:
                return trials
            candidate = dataclasses.replace(best.settings, **{name: value})
            if any(trial.settings == candidate for trial in trials):
                continue
            trials.append(score(candidate, f"{name} {value}"))
            if trials[-1].ndcg > best.ndcg:
                best = trials[-1]
    return trials


def tune_tifu(train, relevant, *, as_of: dt.date, config: TuningConfig = TuningConfig(), k: int = 10, budget_seconds: float,
              clock=time.monotonic, echo=None) -> SegmentTuning:
    """Search TIFU-KNN's settings on ``relevant`` (customer_id, item_id: what each warm customer bought in the validation
    window, repeats included); ``train``: purchase rows before ``as_of``. A change of ``alpha`` alone reuses the fitted model."""
    customers = relevant.select(C.CUSTOMER_ID).distinct().cache()
    ends = clock() + budget_seconds
    fitted: list[TifuRecommender] = []

    def score(settings: TifuSettings, changed: str) -> Trial:
        started = clock()
        reusable = next((model for model in fitted if not TifuSettings(**{
            name: getattr(model, name) for name in settings.model_settings()}).needs_refit(settings)), None)
        if reusable is None:
            reusable = TifuRecommender(**settings.model_settings(), as_of=as_of.isoformat()).fit(train)
            fitted.append(reusable)
        recs = reusable.with_alpha(settings.alpha).recommend(customers, k)
        ndcg = ranking_metrics(recs, relevant, k=k, catalogue_size=1)[0]["ndcg"] or 0.0
        trial = Trial(settings=settings, ndcg=float(ndcg), seconds=round(clock() - started, 1))
        if echo:
            echo(f"    tuning tifu: {changed}, NDCG@{k} {trial.ndcg:.3f} in {trial.seconds:.0f}s")
        return trial

    trials = coordinate_search(config.tifu_start(), config.tifu_grid(), score, ends=ends, min_trials=config.min_trials, clock=clock)
    result = SegmentTuning(segment=ALL_SEGMENTS, customers=customers.count(), trials=trials)
    customers.unpersist()
    for model in fitted:
        model.release()
    return result
