"""seg.targets."""
