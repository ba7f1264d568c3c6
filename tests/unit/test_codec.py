def test_is_delete_reads_the_cdc_operation_header():
    from ys_platform.catalog.codec import CDC_OP_HEADER, is_delete

    assert CDC_OP_HEADER == "ys.cdc.op"
    assert is_delete([("schema-version", b"1"), (CDC_OP_HEADER, b"d")])
    assert not is_delete([(CDC_OP_HEADER, b"u")])
    assert not is_delete([(CDC_OP_HEADER, b"r")])
    assert not is_delete([("ys.dlq.error", b"d")])
    assert not is_delete(None)
    assert not is_delete([])
