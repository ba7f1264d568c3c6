"""Kafka ACLs as an asset: materializing it reconciles the cluster's grants to the catalog's
principals, and its check reports drift."""

from collections.abc import Sequence

import dagster as dg

from ys_platform.assets.versions import CODE_VERSION, data_version
from ys_platform.connectors import ConnectorFile
from ys_platform.resources.kafka import KafkaResource
from ys_platform.security.acls import (
    AUTHORIZER_DISABLED,
    AclReconcile,
    AuthorizerDisabled,
    count_by_principal,
    describe,
    plan_acls,
    reconcile,
)
from ys_platform.security.principals import AclPlan, Principal, desired_bindings, principals

ACLS_KEY = dg.AssetKey(["security", "kafka_acls"])
SECURITY_GROUP = "security"
CHECK_NAME = "matches_catalog"


class AclRunConfig(dg.Config):
    namespace: str = ""
    """Principal, topic and group prefix: grant a copy of the platform (tests, staging)."""
    remove_extra: bool = False
    """Delete the bindings of the platform's principals that the catalog does not grant (and
    any granted to everyone); off by default: an extra grant is reported, a person decides."""


def _bullets(lines: Sequence[str]) -> str:
    return "\n".join(f"- {line}" for line in lines)


def _plan_metadata(acl_plan: AclPlan) -> dict[str, dg.MetadataValue]:
    return {
        "authorizer": dg.MetadataValue.text("enabled"),
        "created": dg.MetadataValue.int(len(acl_plan.create)),
        "extra": dg.MetadataValue.md(_bullets([describe(b) for b in acl_plan.extra]) or "none"),
        "unchanged": dg.MetadataValue.int(len(acl_plan.unchanged)),
    }


def _granted_metadata(found: Sequence[Principal]) -> dict[str, dg.MetadataValue]:
    return {
        "principals": dg.MetadataValue.int(len(found)),
        "bindings_per_principal": dg.MetadataValue.json(
            count_by_principal(desired_bindings(found))
        ),
    }


def _disabled_metadata() -> dict[str, dg.MetadataValue]:
    return {"authorizer": dg.MetadataValue.text(AUTHORIZER_DISABLED)}


def build_acl_assets(
    connectors: Sequence[ConnectorFile] = (),
) -> tuple[dg.AssetsDefinition, dg.AssetChecksDefinition]:
    """The ACL asset and its drift check; ``connectors`` adds the connectors' principals (known
    only when the code location loads its connector files)."""
    files = tuple(connectors)

    @dg.asset(
        key=ACLS_KEY,
        group_name=SECURITY_GROUP,
        kinds={"kafka"},
        code_version=CODE_VERSION,
        description="Reconcile Kafka ACLs to the catalog's principals: create missing grants.",
    )
    def kafka_acls(
        context: dg.AssetExecutionContext, kafka: KafkaResource, config: AclRunConfig
    ) -> dg.MaterializeResult:
        """Who may do what on the cluster: one SCRAM principal per processor, sink, connector,
        the producers, the monitor and Dagster, each allowed exactly what the catalog says it
        reads and writes. Missing grants are created; extra ones are reported and removed only
        with ``remove_extra``. On a cluster without an authorizer nothing is applied."""
        found = principals(files, config.namespace)
        try:
            result: AclReconcile = reconcile(kafka.admin(), found, remove_extra=config.remove_extra)
        except AuthorizerDisabled:
            context.log.warning(AUTHORIZER_DISABLED)
            return dg.MaterializeResult(
                metadata={**_disabled_metadata(), **_granted_metadata(found)},
                data_version=data_version("acls", "authorizer-disabled"),
            )
        for binding in result.plan.extra:
            verb = "removed" if config.remove_extra else "extra (kept)"
            context.log.warning(f"{verb}: {describe(binding)}")
        return dg.MaterializeResult(
            metadata={
                **_plan_metadata(result.plan),
                "removed": dg.MetadataValue.int(len(result.removed)),
                **_granted_metadata(found),
            },
            data_version=data_version("acls", sorted(describe(b) for b in desired_bindings(found))),
        )

    @dg.asset_check(
        asset=ACLS_KEY,
        name=CHECK_NAME,
        description="The cluster grants exactly the catalog's ACLs, and has an authorizer.",
    )
    def kafka_acls_match_catalog(kafka: KafkaResource) -> dg.AssetCheckResult:
        # The check judges the catalog's principals (no namespace): the production grants.
        found = principals(files)
        try:
            acl_plan = plan_acls(kafka.admin(), found)
        except AuthorizerDisabled:
            # Not an error of the platform (the PLAINTEXT stack has no authorizer) but not a
            # pass either: every client may read and write everything. A warning, visible in
            # the UI, that fails no run.
            return dg.AssetCheckResult(
                passed=False,
                severity=dg.AssetCheckSeverity.WARN,
                description=f"{AUTHORIZER_DISABLED}: the cluster enforces no ACLs",
                metadata=_disabled_metadata(),
            )
        return dg.AssetCheckResult(
            passed=acl_plan.in_sync,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "missing": dg.MetadataValue.md(
                    _bullets([describe(b) for b in acl_plan.create]) or "none"
                ),
                "extra": dg.MetadataValue.md(
                    _bullets([describe(b) for b in acl_plan.extra]) or "none"
                ),
                "unchanged": dg.MetadataValue.int(len(acl_plan.unchanged)),
            },
        )

    return kafka_acls, kafka_acls_match_catalog
