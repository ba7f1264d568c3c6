"""promtool on deployments/prometheus: the scrape configuration and rules load, and every alert
fires and stays quiet on the series alerts.test.yml gives it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

PROMETHEUS_DIR = Path(__file__).parents[2] / "deployments" / "prometheus"
PROMTOOL_SCRIPT = PROMETHEUS_DIR / "promtool.sh"

# promtool checks these files in well under a second; 60 s only bounds a hang.
PROMTOOL_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def promtool() -> str:
    """The promtool binary `make test` builds (deployments/prometheus/promtool.sh --build)."""
    found = subprocess.run(
        ["bash", str(PROMTOOL_SCRIPT), "--path"], capture_output=True, text=True, check=False
    )
    if found.returncode != 0:
        pytest.fail(
            f"promtool is needed to check the alert rules and is not built: {found.stderr.strip()}",
            pytrace=False,
        )
    return found.stdout.strip()


def _run(promtool: str, *args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=PROMTOOL_TIMEOUT_S,
        check=False,
    )


def test_the_scrape_configuration_and_its_rules_load(promtool: str) -> None:
    result = _run(promtool, "check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    rules = len(
        [
            r
            for g in yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
            for r in g["rules"]
        ]
    )
    # promtool names the rule file it loaded with the count of rules it found there.
    assert f"SUCCESS: {rules} rules found" in result.stdout + result.stderr


def test_the_rules_pass_promtools_linter(promtool: str) -> None:
    result = _run(promtool, "check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_fires_and_stays_quiet_as_the_tests_expect(promtool: str) -> None:
    result = _run(promtool, "test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_a_wrong_expectation_fails_promtool(promtool: str, tmp_path: Path) -> None:
    # The same tests with CdcSourceSilent expected quiet where it fires: promtool must say so.
    shutil.copy(PROMETHEUS_DIR / "alerts.yml", tmp_path / "alerts.yml")
    tests = yaml.safe_load((PROMETHEUS_DIR / "alerts.test.yml").read_text())
    for test in tests["tests"]:
        for case in test["alert_rule_test"]:
            if case["alertname"] == "CdcSourceSilent":
                case["exp_alerts"] = []
    (tmp_path / "alerts.test.yml").write_text(yaml.safe_dump(tests))

    result = _run(promtool, "test", "rules", "alerts.test.yml", cwd=tmp_path)

    assert result.returncode == 1
    assert "alertname: CdcSourceSilent" in result.stdout + result.stderr
