"""Plain names for what the pages show; the technical name stays on hover (``title``)."""

from __future__ import annotations

from flask import Flask

from webapp.audience_rules import LIFECYCLE_NAMES

LIST_NAMES = {"for_you": "For you (best picks)", "discover": "Discover (new to them)", "buy_again": "Buy again",
              "new_arrivals": "New arrivals"}
SOURCE_NAMES = {
    "popularity": "most popular", "popularity_by_country": "most popular in their country", "trending": "trending",
    "first_basket": "what newcomers buy first",
    "buy_again": "their own staples", "cooccurrence": "bought together", "als": "shoppers with similar tastes (ALS)",
    "segment_als": "similar tastes in their segment (ALS)", "tifu": "shoppers with similar baskets (TIFU-KNN)",
    "next_basket": "due again (next basket)", "events": "their recent activity", "popular": "most popular",
    "new": "a new item", "new_arrivals": "new in the catalogue", "promoted": "promoted", "also_bought": "bought together",
    "content": "similar descriptions",
}


def source_name(source: str | None) -> str:
    """``a+b`` (a fused list) as "a and b", each part by its plain name."""
    if not source:
        return ""
    return " and ".join(SOURCE_NAMES.get(part, part) for part in source.split("+"))


def init_app(app: Flask) -> None:
    app.add_template_filter(source_name, "source_name")

    @app.context_processor
    def plain_names() -> dict:
        return {"list_names": LIST_NAMES, "lifecycle_names": LIFECYCLE_NAMES}
