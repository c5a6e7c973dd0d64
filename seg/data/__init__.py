"""seg.data."""
