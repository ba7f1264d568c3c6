"""Dagster assets: everything that exists in the platform, one lineage graph."""
