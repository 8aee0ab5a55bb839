"""Test beds that drive hopscope for real: a soak of `hopscope collect` (testbed.soak)."""
