"""``ys-platform health [--json]``: one line per component, exit status 1 when any is unhealthy.

The seed's health-check script, against the real services: brokers, controller, partitions,
each catalog topic, Kafka Connect and each connector and task, PostgreSQL and the connectors'
replication slots, ClickHouse, Qdrant, and each catalog consumer group.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from ys_platform.cli.core import ExitCode, with_settings
from ys_platform.settings import Settings

# ys_platform.monitoring.health.GROUP_LAG_WARN_RECORDS, spelled here so the command line starts
# without loading the Kafka client (a unit test keeps the two equal).
GROUP_LAG_WARN_TEXT = "200,000"


def register(commands: argparse._SubParsersAction) -> None:
    health = commands.add_parser(
        "health",
        help="check every component; exit 1 if any is unhealthy",
        description="One line per component: ok, WARN or FAIL; exit status 1 on any FAIL. "
        "Each catalog consumer group's line gives its state, members and offset lag (records "
        "still to read, transaction markers not counted, as `ys-platform monitor` counts them). "
        f"A lag over {GROUP_LAG_WARN_TEXT} records is a WARN, not a failure: one read cannot "
        "tell a backlog being worked off from a stopped worker; `ys-platform monitor` polls and "
        "tells (lag in seconds, STOP/STALL status).",
    )
    health.add_argument("--json", action="store_true", help="print the results as JSON")
    health.set_defaults(func=with_settings(_health))


def _health(args: argparse.Namespace, settings: Settings) -> ExitCode:
    from ys_platform.monitoring.health import check_health

    report = check_health(settings)
    lines = report.components()
    if args.json:
        document = {
            "ok": report.ok,
            "checked_at": report.checked_at,
            "took_s": round(report.took_s, 3),
            "components": [asdict(line) for line in lines],
        }
        print(json.dumps(document, indent=2))
    else:
        width = max(len(line.name) for line in lines)
        for line in lines:
            mark = "FAIL" if not line.ok else "WARN" if line.warn else "ok  "
            print(f"{mark}  {line.name:<{width}}  {line.detail}")
        failed = sum(not line.ok for line in lines)
        warned = sum(line.warn for line in lines)
        warnings = f", {warned} warning(s)" if warned else ""
        print(f"{len(lines) - failed} of {len(lines)} healthy{warnings} ({report.took_s:.1f} s)")
    return ExitCode.OK if report.ok else ExitCode.FAILED
