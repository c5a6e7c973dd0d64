"""seg.report."""
