"""On the PLAINTEXT stack (no authorizer) the ACL asset, its check and the CLI say so and break
nothing: the asset succeeds with "authorizer disabled", the check warns, `acls check` exits 1."""

from __future__ import annotations

import dagster as dg
import pytest

from ys_platform.assets.acls import ACLS_KEY, build_acl_assets
from ys_platform.cli import main
from ys_platform.cli.core import ExitCode
from ys_platform.resources.kafka import KafkaResource
from ys_platform.security.acls import AUTHORIZER_DISABLED, AuthorizerDisabled, live_bindings


@pytest.fixture(scope="module")
def plaintext(local_stack):
    """The default local stack: PLAINTEXT, no authorizer."""
    return local_stack


def test_describe_acls_answers_security_disabled(plaintext):
    with pytest.raises(AuthorizerDisabled, match="SECURITY_DISABLED"):
        live_bindings(plaintext.kafka.admin())


def test_asset_materializes_with_authorizer_disabled_and_check_warns(plaintext):
    kafka_acls, kafka_acls_match_catalog = build_acl_assets()
    result = dg.materialize(
        [kafka_acls],
        resources={"kafka": KafkaResource.of(plaintext.kafka)},
        selection=[ACLS_KEY],
    )
    assert result.success
    (event,) = result.get_asset_materialization_events()
    materialization = event.materialization
    assert materialization.asset_key == ACLS_KEY
    assert materialization.metadata["authorizer"].value == AUTHORIZER_DISABLED
    assert materialization.metadata["principals"].value == 9  # no connector files given

    checked = dg.materialize(
        [kafka_acls, kafka_acls_match_catalog],
        resources={"kafka": KafkaResource.of(plaintext.kafka)},
        selection=dg.AssetSelection.checks(kafka_acls_match_catalog),
    )
    assert checked.success  # a WARN check fails no run
    (evaluation,) = checked.get_asset_check_evaluations()
    assert evaluation.passed is False
    assert evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.description == f"{AUTHORIZER_DISABLED}: the cluster enforces no ACLs"


def test_cli_apply_says_nothing_applied_and_check_exits_1(plaintext, capsys):
    assert main(["acls", "apply", "--dry-run"]) == ExitCode.OK
    out = capsys.readouterr().out
    assert out.startswith(f"{AUTHORIZER_DISABLED} (the cluster at ")
    assert main(["acls", "check", "--principal", "risk-assessment-processor"]) == ExitCode.FAILED
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "PRINCIPAL",
        "RESOURCE",
        "Read",
        "Write",
        "Describe",
        "IdempotentWrite",
    ]
    assert lines[1].split() == ["risk-assessment-processor", "CLUSTER", "-", "-", "-", "allow"]
    assert len(lines) == 1 + 10 + 2  # header, the ten resources, legend, verdict
    assert lines[-1].startswith(f"{AUTHORIZER_DISABLED}: the cluster enforces none of these")
