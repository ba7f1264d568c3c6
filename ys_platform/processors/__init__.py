"""The platform's processors: catalog messages in, pure logic, catalog messages out.

Each is a :class:`ys_platform.streaming.app.StreamApp`, so the same object runs in a unit test on
a list of messages, as ``ys-platform processor run NAME`` and inside a Dagster run.
"""
