"""The principal x operation matrix of `ys-platform acls check`, from an ACL plan."""

from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)

from ys_platform.catalog.topics import consumer_group
from ys_platform.security.acls import acl_matrix, describe
from ys_platform.security.principals import plan, processor_principal

R, W, D = AclOperation.READ, AclOperation.WRITE, AclOperation.DESCRIBE


def _acl(principal, name, op, kind=ResourceType.TOPIC, pattern=ResourcePatternType.LITERAL):
    return AclBinding(kind, name, pattern, f"User:{principal}", "*", op, AclPermissionType.ALLOW)


def test_cells_say_allow_missing_extra_or_denied():
    desired = [
        _acl("p", "a", R),
        _acl("p", "b", W),
        _acl("p", "g.", D, ResourceType.GROUP, ResourcePatternType.PREFIXED),
    ]
    live = [
        _acl("p", "a", R),
        _acl("p", "a", W),
        _acl("p", "g.", D, ResourceType.GROUP, ResourcePatternType.PREFIXED),
    ]
    matrix = acl_matrix(plan(desired, live))
    assert matrix.operations == ("Read", "Write", "Describe")
    assert [(r.principal, r.resource, r.cells) for r in matrix.rows] == [
        ("p", "GROUP g.*", ("-", "-", "allow")),
        ("p", "TOPIC a", ("allow", "EXTRA", "-")),
        ("p", "TOPIC b", ("-", "MISSING", "-")),
    ]
    assert matrix.disagreements == 2


def test_risk_processor_matrix_when_the_cluster_matches():
    principal = processor_principal(consumer_group("risk-assessment-processor"))
    matrix = acl_matrix(plan(principal.bindings, principal.bindings))
    assert matrix.operations == ("Read", "Write", "Describe", "IdempotentWrite")
    assert [(r.resource, r.cells) for r in matrix.rows] == [
        ("CLUSTER", ("-", "-", "-", "allow")),
        ("GROUP risk-assessment-processor", ("allow", "-", "-", "-")),
        ("GROUP risk-assessment-processor.*", ("-", "-", "allow", "-")),
        ("TOPIC defi.transactions", ("allow", "-", "-", "-")),
        ("TOPIC dlq.risk-assessment-processor", ("-", "allow", "-", "-")),
        ("TOPIC market.analytics", ("allow", "-", "-", "-")),
        ("TOPIC risk.alerts", ("-", "allow", "-", "-")),
        ("TOPIC risk.assessments", ("-", "allow", "-", "-")),
        ("TOPIC users.portfolios", ("allow", "-", "-", "-")),
        ("TRANSACTIONAL_ID risk-assessment-processor.*", ("-", "allow", "allow", "-")),
    ]
    assert {r.principal for r in matrix.rows} == {"risk-assessment-processor"}
    assert matrix.disagreements == 0


def test_describe_names_a_binding_in_kafkas_words():
    binding = _acl("x", "kafka-cluster", AclOperation.IDEMPOTENT_WRITE, ResourceType.BROKER)
    assert describe(binding) == "User:x ALLOW IDEMPOTENT_WRITE on CLUSTER kafka-cluster (LITERAL)"


def test_acls_check_of_an_unknown_principal_exits_2_before_any_connection(
    monkeypatch, tmp_path, capsys
):
    from ys_platform.cli import main
    from ys_platform.cli.core import ExitCode

    monkeypatch.delenv("YS_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("YS_HOME", str(tmp_path))
    monkeypatch.setenv("YS_LOCAL_KAFKA_PORT", "29392")  # nothing listens there
    assert main(["acls", "check", "--principal", "nobody"]) == ExitCode.CONFIG
    assert capsys.readouterr().err == "ys-platform: no principal named 'nobody'\n"
