"""Sinks: long-running consumers that write topics into ClickHouse and Qdrant."""
