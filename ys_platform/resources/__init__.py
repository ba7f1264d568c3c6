"""Dagster resources over the platform's systems; `bindings.py` binds them to the settings."""
