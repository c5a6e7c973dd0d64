"""seg.models."""
