"""The Kafka runtime: topic administration, batch consume, transactions, dead letters.

Nothing here imports Dagster: a worker runs the same code standalone or inside a Dagster run.
"""
