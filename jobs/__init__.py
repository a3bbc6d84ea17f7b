"""Spark jobs: thin entry points that parse arguments, build the session, call library code and write."""
