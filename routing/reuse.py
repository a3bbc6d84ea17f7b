"""Reusing the routes an earlier run chose: a daily refit that validates once a week.

Routes change slowly while validation is most of the recommendations stage's time on
small inputs. ``reusable_choice`` says whether the routes in an earlier manifest may
serve a run as of a later date: chosen at most ``reuse_routes_days`` before it, under
the same settings.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

from cf.interactions import RecommendationError
from cf.tifu import TifuSettings
from cf.tuning import ALSSettings


# The settings sections whose values decide which routes win.
CHOICE_SECTIONS = ("routing", "tuning", "clv", "segments")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    reuse_routes_days: int | None = None  # reuse the last run's routes chosen at most this many days before; None: always validate

    def __post_init__(self):
        if self.reuse_routes_days is not None and self.reuse_routes_days < 0:
            raise RecommendationError(f"--reuse-routes (train.reuse_routes_days) must be 0 or more days, got {self.reuse_routes_days}")


def choice_settings(settings) -> dict:
    """Every setting that decides which routes win (of a run's ``Settings``), as a manifest records them (tuples as lists)."""
    return json.loads(json.dumps({section: dataclasses.asdict(getattr(settings, section)) for section in CHOICE_SECTIONS}))


def reusable_choice(earlier: dict | None, *, as_of: dt.date, max_age_days: int, settings: dict) -> tuple[dict | None, str]:
    """What validation chose for the run whose manifest is ``earlier``, in ``validate``'s shape, if it may serve
    a run as of ``as_of`` under ``settings`` (see ``choice_settings``); None if not. The reason, either way.
    """
    if earlier is None:
        return None, "no earlier run in this output"
    if "routes_chosen_as_of" not in earlier:
        return None, "the last run's manifest does not say when its routes were chosen (written before --reuse-routes existed)"
    chosen_as_of = dt.date.fromisoformat(earlier["routes_chosen_as_of"])
    age = (as_of - chosen_as_of).days
    if age < 0:
        return None, f"the last run's routes were chosen as of {chosen_as_of}, after {as_of}"
    if age > max_age_days:
        return None, f"the last run's routes were chosen {age} days before {as_of}, more than {max_age_days}"
    missing = object()
    changed = [f"{section}.{key}" for section, values in settings.items() for key, value in values.items()
               if earlier["settings"].get(section, {}).get(key, missing) != value]
    if "tifu_settings" not in earlier:
        changed.append("tifu_settings (the last run had no TIFU-KNN)")
    if changed:
        return None, f"settings changed since the last run's routes were chosen: {', '.join(changed)}"
    chosen = {
        "routes": earlier["routes"],
        "als_settings": {name: ALSSettings(**values) for name, values in earlier["als_settings"].items()},
        "tifu_settings": TifuSettings(**earlier["tifu_settings"]),
        "similar_items_source": earlier["similar_items_source"],
        "window": {**earlier["validation"], "tuning": earlier["tuning"]},
        "chosen_as_of": chosen_as_of,
    }
    return chosen, f"routes chosen as of {chosen_as_of}, {age} days before"
