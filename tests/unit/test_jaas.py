"""The JAAS lines of Java clients: one login module per SASL mechanism, nothing injectable."""

from __future__ import annotations

import pytest

from ys_platform.clients.jaas import jaas_config


@pytest.mark.parametrize(
    ("mechanism", "module"),
    [
        ("SCRAM-SHA-512", "org.apache.kafka.common.security.scram.ScramLoginModule"),
        ("SCRAM-SHA-256", "org.apache.kafka.common.security.scram.ScramLoginModule"),
        ("PLAIN", "org.apache.kafka.common.security.plain.PlainLoginModule"),
    ],
)
def test_each_mechanism_has_its_login_module(mechanism: str, module: str) -> None:
    assert jaas_config(mechanism, "ys-risk", "${env:YS_X}") == (
        f'{module} required username="ys-risk" password="${{env:YS_X}}";'
    )


def test_an_unknown_mechanism_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="'GSSAPI'"):
        jaas_config("GSSAPI", "u", "p")


@pytest.mark.parametrize("password", ['a"; evil=1', "back\\slash"])
def test_a_value_that_would_end_the_option_is_refused_without_echoing_it(password: str) -> None:
    with pytest.raises(ValueError) as caught:
        jaas_config("SCRAM-SHA-512", "u", password)
    assert password not in str(caught.value)
