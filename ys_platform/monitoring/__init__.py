"""Lag, Burrow-style status, source freshness, cluster health, Prometheus exporter and alerts."""
