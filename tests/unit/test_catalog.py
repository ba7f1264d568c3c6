def test_change_stream_inputs_of_the_groups():
    from ys_platform.catalog.topics import consumer_group

    assert consumer_group("risk-assessment-processor").change_stream_inputs == {
        "defi.transactions",
        "users.portfolios",
    }
    assert consumer_group("price-aggregation-processor").change_stream_inputs == frozenset()
    assert consumer_group("clickhouse-sink").change_stream_inputs == {
        "defi.transactions",
        "defi.yields",
    }
