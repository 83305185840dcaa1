"""aelab.viz."""
