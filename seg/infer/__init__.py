"""seg.infer."""
