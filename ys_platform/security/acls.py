"""Reconcile the cluster's ACLs to the principals of the catalog.

The pure half is :mod:`ys_platform.security.principals` (who is granted what, and
:func:`~ys_platform.security.principals.plan`); this module reads the cluster's bindings
(``describe_acls``), creates the missing ones (``create_acls``) and, only when asked, deletes the
extra ones (``delete_acls``, one exact filter per binding).

A cluster without an authorizer (the PLAINTEXT local stack) answers the ACL requests with
SECURITY_DISABLED (see :func:`live_bindings` for how it is found): that is
:class:`AuthorizerDisabled`, which callers report as such ("no ACLs applied"), not as a failure
of the reconcile.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from ys_platform.security.principals import (
    ANY_HOST,
    AclPlan,
    Principal,
    desired_bindings,
    plan,
)

ADMIN_TIMEOUT_S = 30.0

AUTHORIZER_DISABLED = "authorizer disabled: no ACLs applied"

_EVERY_BINDING = AclBindingFilter(
    ResourceType.ANY,
    None,
    ResourcePatternType.ANY,
    None,
    None,
    AclOperation.ANY,
    AclPermissionType.ANY,
)


class AclAdminError(RuntimeError):
    """The cluster refused or did not answer an ACL request; the message says which."""


class AuthorizerDisabled(AclAdminError):
    """The cluster has no authorizer: every client may do anything, there are no ACLs."""

    def __init__(self) -> None:
        super().__init__(
            "the cluster has no authorizer (SECURITY_DISABLED): it enforces no ACLs; start it "
            "with `ys-platform local up --secure` or set authorizer.class.name on the brokers"
        )


@dataclass(frozen=True)
class AclReconcile:
    """What one reconcile found and did."""

    plan: AclPlan
    removed: tuple[AclBinding, ...] = ()
    """The extra bindings deleted (only with ``remove_extra``)."""


# Matches no binding: no SCRAM user can be named with spaces (nor a platform principal).
_MATCHES_NOTHING = AclBindingFilter(
    ResourceType.TOPIC,
    "ys authorizer probe",
    ResourcePatternType.LITERAL,
    "User:ys authorizer probe",
    ANY_HOST,
    AclOperation.READ,
    AclPermissionType.ALLOW,
)


def live_bindings(admin: AdminClient, timeout_s: float = ADMIN_TIMEOUT_S) -> tuple[AclBinding, ...]:
    """Every binding on the cluster (DescribeAcls needs Describe on the cluster).

    Raises :class:`AuthorizerDisabled` on a cluster without an authorizer. DescribeAcls does
    not say so: measured on the PLAINTEXT local stack (Kafka 4.x, librdkafka 2.16) it answers
    an empty list, while CreateAcls and DeleteAcls answer SECURITY_DISABLED. So an empty answer
    is confirmed by deleting a filter that matches nothing (DeleteAcls: Alter on the cluster).
    """
    try:
        found = tuple(
            admin.describe_acls(_EVERY_BINDING, request_timeout=timeout_s).result(timeout=timeout_s)
        )
        if not found:
            (probe,) = admin.delete_acls([_MATCHES_NOTHING], request_timeout=timeout_s).values()
            probe.result(timeout=timeout_s)
        return found
    except KafkaException as exc:
        if _code(exc) == KafkaError.SECURITY_DISABLED:
            raise AuthorizerDisabled() from None
        raise AclAdminError(f"could not describe ACLs: {_reason(exc)}") from None


def plan_acls(
    admin: AdminClient, principals: Sequence[Principal], timeout_s: float = ADMIN_TIMEOUT_S
) -> AclPlan:
    return plan(desired_bindings(principals), live_bindings(admin, timeout_s))


def apply_plan(
    admin: AdminClient,
    acl_plan: AclPlan,
    *,
    remove_extra: bool = False,
    timeout_s: float = ADMIN_TIMEOUT_S,
) -> AclReconcile:
    """Create the missing bindings and, with ``remove_extra``, delete the extra ones.

    Raises :class:`AclAdminError` naming every binding that failed; the others are applied.
    """
    errors: list[str] = []
    if acl_plan.create:
        futures = admin.create_acls(list(acl_plan.create), request_timeout=timeout_s)
        for binding, future in futures.items():
            try:
                future.result(timeout=timeout_s)
            except KafkaException as exc:
                errors.append(f"create {describe(binding)}: {_reason(exc)}")
    removed: list[AclBinding] = []
    if remove_extra and acl_plan.extra:
        filters = [_exact(b) for b in acl_plan.extra]
        futures = admin.delete_acls(filters, request_timeout=timeout_s)
        for binding_filter, future in futures.items():
            try:
                removed += future.result(timeout=timeout_s)
            except KafkaException as exc:
                errors.append(f"delete {describe(binding_filter)}: {_reason(exc)}")
    if errors:
        raise AclAdminError("ACL reconcile failed for: " + "; ".join(errors))
    if acl_plan.create:
        _await_enforced(admin, acl_plan.create, timeout_s)
    return AclReconcile(acl_plan, tuple(sorted(removed)))


# How often to ask whether new grants are in force (a DescribeAcls is a few milliseconds).
_ENFORCED_POLL_S = 0.1


def _await_enforced(admin: AdminClient, created: Sequence[AclBinding], timeout_s: float) -> None:
    """Return once a broker's authorizer holds every binding of ``created``.

    CreateAcls returns when the controller has committed the records; each broker applies them
    when its metadata publisher reaches them, behind whatever came first. Right after the
    catalog's topics were created that was ~200 partition logs, and a connector task started
    2.2 s after the grants was refused its heartbeat topic (KRaft brokers serve DescribeAcls
    from that same authorizer, so what it answers is what it enforces).
    """
    deadline = time.monotonic() + timeout_s
    wanted = set(created)
    while True:
        missing = wanted - set(live_bindings(admin, timeout_s))
        if not missing:
            return
        if time.monotonic() >= deadline:
            raise AclAdminError(
                f"{len(missing)} new grant(s) not in force on the brokers after {timeout_s:.0f} s, "
                f"e.g. {describe(min(missing))}"
            )
        time.sleep(_ENFORCED_POLL_S)


def reconcile(
    admin: AdminClient,
    principals: Sequence[Principal],
    *,
    remove_extra: bool = False,
    dry_run: bool = False,
    timeout_s: float = ADMIN_TIMEOUT_S,
) -> AclReconcile:
    """Plan against the cluster and, unless ``dry_run``, apply. Raises
    :class:`AuthorizerDisabled` on a cluster without an authorizer."""
    acl_plan = plan_acls(admin, principals, timeout_s)
    if dry_run:
        return AclReconcile(acl_plan)
    return apply_plan(admin, acl_plan, remove_extra=remove_extra, timeout_s=timeout_s)


def describe(binding: AclBinding | AclBindingFilter) -> str:
    """One line naming a binding: ``User:x ALLOW READ on TOPIC market.prices (LITERAL)``."""
    pattern = binding.resource_pattern_type.name
    return (
        f"{binding.principal} {binding.permission_type.name} {binding.operation.name} on "
        f"{resource_kind(binding.restype)} {binding.name} ({pattern})"
    )


def resource_kind(restype: ResourceType) -> str:
    """Kafka's name of a resource type (librdkafka's BROKER is Kafka's CLUSTER)."""
    return "CLUSTER" if restype == ResourceType.BROKER else restype.name


def _exact(binding: AclBinding) -> AclBindingFilter:
    return AclBindingFilter(
        binding.restype,
        binding.name,
        binding.resource_pattern_type,
        binding.principal,
        binding.host,
        binding.operation,
        binding.permission_type,
    )


def count_by_principal(bindings: Iterable[AclBinding]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for binding in bindings:
        counts[binding.principal] = counts.get(binding.principal, 0) + 1
    return dict(sorted(counts.items()))


def _code(exc: KafkaException) -> int | None:
    err = exc.args[0] if exc.args else None
    return err.code() if isinstance(err, KafkaError) else None


def _reason(exc: KafkaException) -> str:
    err = exc.args[0] if exc.args else None
    return err.str() if isinstance(err, KafkaError) else str(exc)


# --- the principal × operation matrix of `ys-platform acls check` ------------------------------
ALLOWED = "allow"
DENIED = "-"
MISSING = "MISSING"
"""The catalog grants it, the cluster does not: the component will be refused."""
EXTRA = "EXTRA"
"""The cluster grants it, the catalog does not: more access than the catalog says."""

# Kafka's own names of the operations (kafka-acls --operation), in the order of the columns.
_OPERATION_NAMES: dict[AclOperation, str] = {
    AclOperation.READ: "Read",
    AclOperation.WRITE: "Write",
    AclOperation.DESCRIBE: "Describe",
    AclOperation.CREATE: "Create",
    AclOperation.ALTER: "Alter",
    AclOperation.DELETE: "Delete",
    AclOperation.ALTER_CONFIGS: "AlterConfigs",
    AclOperation.DESCRIBE_CONFIGS: "DescribeConfigs",
    AclOperation.IDEMPOTENT_WRITE: "IdempotentWrite",
    AclOperation.CLUSTER_ACTION: "ClusterAction",
    AclOperation.ALL: "All",
}


@dataclass(frozen=True)
class MatrixRow:
    """One principal on one resource: a cell per operation column."""

    principal: str
    resource: str
    """``TOPIC market.prices``, ``GROUP risk-assessment-processor.*`` (a prefix), ``CLUSTER``."""
    cells: tuple[str, ...]


@dataclass(frozen=True)
class AclMatrix:
    operations: tuple[str, ...]
    rows: tuple[MatrixRow, ...]

    @property
    def disagreements(self) -> int:
        return sum(c in (MISSING, EXTRA) for r in self.rows for c in r.cells)


def _resource(binding: AclBinding) -> str:
    if binding.restype == ResourceType.BROKER:
        return "CLUSTER"
    star = "*" if binding.resource_pattern_type == ResourcePatternType.PREFIXED else ""
    return f"{binding.restype.name} {binding.name}{star}"


def acl_matrix(acl_plan: AclPlan) -> AclMatrix:
    """What the catalog grants against what the cluster has, per principal and resource.

    A cell is ``allow`` (both grant), ``-`` (neither: denied), ``MISSING`` (the catalog grants,
    the cluster does not) or ``EXTRA`` (the cluster grants, the catalog does not). Only ALLOW
    bindings are shown as grants; an extra DENY binding shows as EXTRA too.
    """
    wanted = set(acl_plan.create) | set(acl_plan.unchanged)
    live = set(acl_plan.unchanged) | set(acl_plan.extra)
    every = wanted | live
    used = {b.operation for b in every}
    operations = [op for op in _OPERATION_NAMES if op in used]
    keys: dict[tuple[str, str], dict[AclOperation, str]] = {}
    for binding in sorted(every):
        cells = keys.setdefault((binding.principal.removeprefix("User:"), _resource(binding)), {})
        granted, present = binding in wanted, binding in live
        cells[binding.operation] = ALLOWED if granted and present else MISSING if granted else EXTRA
    rows = tuple(
        MatrixRow(principal, resource, tuple(cells.get(op, DENIED) for op in operations))
        for (principal, resource), cells in sorted(keys.items())
    )
    return AclMatrix(tuple(_OPERATION_NAMES[op] for op in operations), rows)
