"""seg.metrics."""
