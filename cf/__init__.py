"""Collaborative filtering: per-segment implicit ALS, buy-again and item-to-item lists (issue 4)."""
