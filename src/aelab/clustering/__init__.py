"""aelab.clustering."""
