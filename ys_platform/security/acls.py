"""Reconcile the cluster's ACLs to the principals of the catalog.

The pure half is :mod:`ys_platform.security.principals` (who is granted what, and
:func:`~ys_platform.security.principals.plan`); this module reads the cluster's bindings
(``describe_acls``), creates the missing ones (``create_acls``) and, only when asked, deletes the
extra ones (``delete_acls``, one exact filter per binding).

A cluster without an authorizer (the PLAINTEXT local stack) answers ``describe_acls`` with
SECURITY_DISABLED: that is :class:`AuthorizerDisabled`, which callers report as such ("no ACLs
applied"), not as a failure of the reconcile.
"""

from __future__ import annotations

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

from ys_platform.security.principals import AclPlan, Principal, desired_bindings, plan

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


def live_bindings(admin: AdminClient, timeout_s: float = ADMIN_TIMEOUT_S) -> tuple[AclBinding, ...]:
    """Every binding on the cluster (DescribeAcls needs Describe on the cluster)."""
    try:
        return tuple(
            admin.describe_acls(_EVERY_BINDING, request_timeout=timeout_s).result(timeout=timeout_s)
        )
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
    return AclReconcile(acl_plan, tuple(sorted(removed)))


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
