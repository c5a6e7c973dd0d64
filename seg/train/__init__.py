"""seg.train."""
