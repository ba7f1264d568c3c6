"""Dagster sensors: they look and decide within a tick, and never run a consume loop."""
