"""Monitoring of the platform: consumer lag, component health, Prometheus metrics and alerts."""
