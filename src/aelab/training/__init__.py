"""aelab.training."""
