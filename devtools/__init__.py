"""Developer tooling, not part of the installed library: benchmarks, the single-machine reference, the
standalone-cluster check and the JVM cache trainer. Run from a checkout, e.g. ``python -m devtools.bench``."""
