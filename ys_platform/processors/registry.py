"""Which processors exist, by the name operators use (``price-aggregation``) or their group id."""

from __future__ import annotations

from collections.abc import Callable

from ys_platform.streaming.app import StreamApp


def _price_aggregation() -> StreamApp:
    from ys_platform.processors.price_aggregation import PriceAggregation

    return PriceAggregation()


def _risk_assessment() -> StreamApp:
    from ys_platform.processors.risk_assessment import RiskAssessmentProcessor

    return RiskAssessmentProcessor()


def _crosschain_arbitrage() -> StreamApp:
    from ys_platform.processors.crosschain_arbitrage import CrosschainArbitrageProcessor

    return CrosschainArbitrageProcessor()


# Factories import lazily so that naming a processor does not load every processor's logic.
_FACTORIES: dict[str, Callable[[], StreamApp]] = {
    "price-aggregation-processor": _price_aggregation,
    "risk-assessment-processor": _risk_assessment,
    "crosschain-arbitrage-processor": _crosschain_arbitrage,
}


def processor_names() -> list[str]:
    return sorted(_FACTORIES)


def resolve(name: str) -> str:
    """The consumer group id of a processor named with or without its ``-processor`` suffix."""
    group_id = name if name in _FACTORIES else f"{name}-processor"
    if group_id not in _FACTORIES:
        known = ", ".join(n.removesuffix("-processor") for n in processor_names())
        raise KeyError(f"no processor named {name!r}; known: {known}")
    return group_id


def build_processor(name: str) -> StreamApp:
    return _FACTORIES[resolve(name)]()
