"""aelab.anomaly."""
