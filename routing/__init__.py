"""Routing: which source serves each list and segment, chosen on validation, and the routed recommender that serves them."""
