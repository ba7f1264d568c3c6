"""``ys-platform acls apply|check``: grant each principal of the catalog exactly its ACLs, and show
the principal × operation matrix of what the catalog grants against what the cluster has."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ys_platform.cli.core import CommandError, ExitCode, print_table, with_settings
from ys_platform.settings import Settings

if TYPE_CHECKING:
    from ys_platform.security.principals import Principal


def register(commands: argparse._SubParsersAction) -> None:
    acls = commands.add_parser("acls", help="Kafka ACLs of the platform's principals")
    sub = acls.add_subparsers(dest="acls_command", required=True)
    apply = sub.add_parser(
        "apply", help="create the ACLs the catalog grants; extra ones only with --remove-extra"
    )
    apply.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    apply.add_argument(
        "--remove-extra",
        action="store_true",
        help="delete grants of the platform's principals (or of everyone) the catalog lacks",
    )
    _namespace(apply)
    apply.set_defaults(func=with_settings(_apply))
    check = sub.add_parser(
        "check",
        help="the principal x operation matrix: catalog against cluster (exit 1 if they differ)",
    )
    check.add_argument("--principal", help="only this principal (its SCRAM user name)")
    _namespace(check)
    check.set_defaults(func=with_settings(_check))


def _namespace(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--namespace", default="", help="prefix of principals, topics and groups (a test's copy)"
    )


def _principals(settings: Settings, namespace: str) -> tuple[Principal, ...]:
    from ys_platform.connectors import connector_files
    from ys_platform.security.principals import principals

    return principals(connector_files(settings.connectors_dir), namespace)


def _apply(args: argparse.Namespace, settings: Settings) -> ExitCode:
    from ys_platform.clients.kafka import check_reachable
    from ys_platform.security.acls import (
        AUTHORIZER_DISABLED,
        AclAdminError,
        AuthorizerDisabled,
        describe,
        reconcile,
    )

    found = _principals(settings, args.namespace)
    check_reachable(settings.kafka)
    try:
        result = reconcile(
            settings.kafka.admin(), found, remove_extra=args.remove_extra, dry_run=args.dry_run
        )
    except AuthorizerDisabled:
        # Nothing to apply on an open cluster (the PLAINTEXT stack): said, not failed.
        print(f"{AUTHORIZER_DISABLED} (the cluster at {settings.kafka_bootstrap_servers})")
        return ExitCode.OK
    except AclAdminError as exc:
        raise CommandError(
            f"ACL reconcile failed against {settings.kafka_bootstrap_servers}: {exc}"
        ) from exc
    acl_plan = result.plan
    verb = "would create" if args.dry_run else "created"
    for binding in acl_plan.create:
        print(f"{verb}: {describe(binding)}")
    created = "to create" if args.dry_run else "created"
    removing = args.remove_extra and not args.dry_run
    extra_verb = "removed" if removing else "would remove" if args.remove_extra else "extra"
    for binding in acl_plan.extra:
        print(f"{extra_verb}: {describe(binding)}")
    print(
        f"{len(found)} principals, {len(acl_plan.create)} {created}, "
        f"{len(acl_plan.unchanged)} unchanged, {len(acl_plan.extra)} extra"
        + (f" ({len(result.removed)} removed)" if removing else "")
    )
    return ExitCode.OK


def _check(args: argparse.Namespace, settings: Settings) -> ExitCode:
    from ys_platform.clients.kafka import check_reachable
    from ys_platform.security.acls import (
        AUTHORIZER_DISABLED,
        EXTRA,
        MISSING,
        AclAdminError,
        AuthorizerDisabled,
        acl_matrix,
        live_bindings,
    )
    from ys_platform.security.principals import desired_bindings, plan

    found = _principals(settings, args.namespace)
    if args.principal is not None:
        found = tuple(p for p in found if p.name == args.principal)
        if not found:
            raise CommandError(f"no principal named {args.principal!r}", ExitCode.CONFIG)
    check_reachable(settings.kafka)
    desired = desired_bindings(found)
    try:
        live = live_bindings(settings.kafka.admin())
        disabled = False
    except AuthorizerDisabled:
        live, disabled = (), True
    except AclAdminError as exc:
        raise CommandError(
            f"could not read the ACLs of {settings.kafka_bootstrap_servers}: {exc}"
        ) from exc
    # On an open cluster there is nothing to compare: the matrix shows the catalog's grants.
    acl_plan = plan(desired, desired if disabled else live)
    matrix = acl_matrix(acl_plan)
    print_table(
        [("PRINCIPAL", "RESOURCE", *matrix.operations)]
        + [(r.principal, r.resource, *r.cells) for r in matrix.rows]
    )
    if disabled:
        print("allow: granted by the catalog; -: not granted")
        print(f"{AUTHORIZER_DISABLED}: the cluster enforces none of these, every client may do all")
        return ExitCode.FAILED
    print(
        f"allow: granted by the catalog and the cluster; -: denied; {MISSING}: granted by the "
        f"catalog only (the component will be refused); {EXTRA}: granted by the cluster only"
    )
    print(
        f"{len(found)} principals, {len(acl_plan.unchanged)} grants in place, "
        f"{len(acl_plan.create)} missing, {len(acl_plan.extra)} extra"
    )
    return ExitCode.OK if acl_plan.in_sync else ExitCode.FAILED
