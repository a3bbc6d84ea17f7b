"""Cold start: popularity and trending for customers the models do not know, and item descriptions (TF-IDF) for items too new to have buyers."""
