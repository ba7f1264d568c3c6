"""``ys-platform search COLLECTION QUERY``: semantic search in a Qdrant collection."""

from __future__ import annotations

import argparse
import json

from ys_platform.cli.core import CommandError, ExitCode, with_settings
from ys_platform.settings import Settings


def register(commands: argparse._SubParsersAction) -> None:
    search = commands.add_parser("search", help="semantic search in a Qdrant collection")
    search.add_argument("collection", help="e.g. protocols, tokens, user_behavior, documents")
    search.add_argument("query", help="free text, e.g. 'decentralized lending'")
    search.add_argument("--limit", type=int, default=5)
    search.add_argument("--namespace", default="", help="the sink's namespace, if any")
    search.set_defaults(func=with_settings(_search))


def _search(args: argparse.Namespace, settings: Settings) -> ExitCode:
    # Not sinks.vector: qdrant-client is imported only if no running sink answers (see there).
    from ys_platform.sinks.vector_search import (
        NoSuchCollectionError,
        collection_prefix,
        search_store,
    )

    collection = f"{collection_prefix(args.namespace)}{args.collection}"
    try:
        hits = search_store(
            collection,
            args.query,
            args.limit,
            url=settings.qdrant_url,
            path=None if settings.qdrant_url else settings.qdrant_path,
            api_key=settings.qdrant_api_key,
        )
    except NoSuchCollectionError as exc:
        raise CommandError(str(exc.args[0])) from None
    for score, payload in hits:
        shown = {k: v for k, v in payload.items() if not k.startswith("_")}
        print(f"{score:.3f}  {payload.get('_key', '?')}  {json.dumps(shown, default=str)}")
    return ExitCode.OK
