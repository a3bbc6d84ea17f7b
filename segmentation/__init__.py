"""Value segments: RFM and CLV features and K-means high/mid/low buckets.

This package is the base of the libraries: it owns the canonical transaction
columns (:mod:`segmentation.columns`) that every later stage reads.
"""
