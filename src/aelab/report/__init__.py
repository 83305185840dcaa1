"""aelab.report."""
