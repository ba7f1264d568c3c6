"""The monitor's settings: defaults, overrides, and a bad pattern named at start-up."""

import pytest

from ys_platform.monitoring.lag import GroupFilter
from ys_platform.settings import SettingsError, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("YS_"):
            monkeypatch.delenv(name)


def test_defaults():
    settings = load_settings()
    assert settings.monitor_port == 9308
    assert settings.monitor_interval_s == 5.0
    assert settings.monitor_groups_allow is None
    assert settings.monitor_groups_deny is None


def test_overrides(monkeypatch):
    monkeypatch.setenv("YS_MONITOR_PORT", "9400")
    monkeypatch.setenv("YS_MONITOR_INTERVAL_S", "0.5")
    monkeypatch.setenv("YS_MONITOR_GROUPS_ALLOW", "app-.*")
    monkeypatch.setenv("YS_MONITOR_GROUPS_DENY", "app-test-.*")
    settings = load_settings()
    assert (settings.monitor_port, settings.monitor_interval_s) == (9400, 0.5)
    groups = GroupFilter.of(
        ["price-aggregation-processor"],
        settings.monitor_groups_allow,
        settings.monitor_groups_deny,
    )
    assert groups.admits("app-orders")
    assert not groups.admits("app-test-1")
    assert not groups.admits("other")
    assert not groups.admits("xapp-orders")  # the whole id must match
    assert groups.admits("price-aggregation-processor")  # the catalog's, whatever the patterns


@pytest.mark.parametrize("variable", ["YS_MONITOR_GROUPS_ALLOW", "YS_MONITOR_GROUPS_DENY"])
def test_bad_pattern_names_the_variable(monkeypatch, variable):
    monkeypatch.setenv(variable, "app-(")
    with pytest.raises(SettingsError, match=f"{variable}: 'app-\\(' is not a regular expression"):
        load_settings()


@pytest.mark.parametrize(
    ("variable", "value"), [("YS_MONITOR_PORT", "0"), ("YS_MONITOR_INTERVAL_S", "0")]
)
def test_bad_number_names_the_variable(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable):
        load_settings()
