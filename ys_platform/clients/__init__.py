"""Connections to the platform's systems, free of Dagster: for workers, the CLI and resources."""
