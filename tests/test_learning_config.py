"""The `[learning]` and `[gate]` sections of the configuration file: parsed into `FitConfig` and
`GateConfig`, checked with messages that name the file, the section and the setting, and read by
training (a shop's file changes what the night's fit reads and what the gate requires)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from recsys.config import load_config
from recsys.config.catalog import DEFAULT_CONFIG
from recsys.config.learning import FitConfig, GateConfig
from recsys.errors import ConfigError


def _config_with(tmp_path: Path, old: str, new: str) -> Path:
    text = DEFAULT_CONFIG.read_text(encoding="utf-8")
    assert old in text, old
    path = tmp_path / "config.toml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


def test_the_packaged_file_states_the_defaults() -> None:
    config = load_config()
    assert config.learning == FitConfig()
    assert config.gate == GateConfig()
    text = DEFAULT_CONFIG.read_text(encoding="utf-8")
    assert "\n[learning]\n" in text and "\n[gate]\n" in text


def test_a_shop_file_changes_the_settings_and_none_lifts_a_bound(tmp_path: Path) -> None:
    path = _config_with(tmp_path, "max_offers = 300000", 'max_offers = "none"')
    path.write_text(
        path.read_text(encoding="utf-8")
        .replace("recent_days = 7\n", "recent_days = 3\n", 1)
        .replace("max_users = 100000\n", 'max_users = "none"\n', 1)
        .replace("min_effective_sample_size = 1000.0", "min_effective_sample_size = 250", 1)
        .replace("require_evidence_over_baseline = true", "require_evidence_over_baseline = false", 1)
        .replace("off_policy_max_decisions = 200000", 'off_policy_max_decisions = "none"', 1)
        .replace("refit_on_all = true\n", "refit_on_all = true\ntolerance = 1e-6\n", 1),
        encoding="utf-8",
    )
    config = load_config(path)
    assert config.learning == dataclasses.replace(
        FitConfig(), max_offers=None, recent_days=3, tolerance=1e-6, max_users=None
    )
    assert config.gate == GateConfig(
        min_effective_sample_size=250.0, require_evidence_over_baseline=False, off_policy_max_decisions=None
    )
    # a file without the sections runs on the defaults
    bare = tmp_path / "bare.toml"
    text = DEFAULT_CONFIG.read_text(encoding="utf-8")
    bare.write_text(text[: text.index("\n# ---", text.index("[campaign.quiet_hours]"))], encoding="utf-8")
    assert "[learning]" not in bare.read_text(encoding="utf-8")
    assert (load_config(bare).learning, load_config(bare).gate) == (FitConfig(), GateConfig())


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("recent_days = 7", "recent_day = 7", r"\[learning\] has no setting recent_day \(settings: l2_main, "),
        ("max_offers = 300000", "max_offers = 0", r"\[learning\] max_offers must be >= 1"),
        ("max_users = 100000", "max_users = 0", r"\[learning\] max_users must be >= 1"),
        ("max_offers = 300000", 'max_offers = "lots"', r"\[learning\] max_offers must be a whole number or \"none\""),
        ("l2_main = 10.0", "l2_main = -1.0", r"\[learning\] l2_main must be > 0"),
        ("refit_on_all = true", "refit_on_all = 1", r"\[learning\] refit_on_all must be true or false"),
        ("margin = 0.02", "margin = -0.1", r"\[gate\] margin must be >= 0"),
        ("margin = 0.02", 'margin = "small"', r"\[gate\] margin must be a number"),
        (
            "model_evidence_refits = 16",
            "model_evidence_refits = 2.5",
            r"\[gate\] model_evidence_refits must be a whole",
        ),
        ("model_evidence_quantile = 0.05", "model_evidence_quantile = 0.7", r"model_evidence_quantile must be in"),
        ("refit_on_all = true", "refit_on_all = true\ntolerance = 0.0", r"\[learning\] tolerance must be in \(0, 1\)"),
        (
            "off_policy_max_decisions = 200000",
            "off_policy_max_decisions = 0",
            r"\[gate\] off_policy_max_decisions must be >= 1",
        ),
    ],
)
def test_bad_settings_are_refused_naming_the_file_section_and_setting(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    path = _config_with(tmp_path, old, new)
    with pytest.raises(ConfigError, match=message) as e:
        load_config(path)
    assert str(path) in str(e.value)
