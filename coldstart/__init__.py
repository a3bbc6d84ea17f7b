"""Cold start: popularity and trending recommendations for customers the models do not know (issue 4)."""
