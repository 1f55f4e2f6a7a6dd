"""Settings: flags and KALLA_* variables, validated, and every one documented."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from kalla.config import LOOPBACK_HOSTS, Settings, load_settings

DOCS = Path(__file__).resolve().parents[2] / "docs" / "RUNNER.md"


def test_environment_and_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KALLA_PORT", "9001")
    monkeypatch.setenv("KALLA_ALLOWED_CALLBACK_HOSTS", "API.internal, 127.0.0.1")
    monkeypatch.setenv("KALLA_ALLOWED_SOURCE_ROOTS", f"{tmp_path}/a,{tmp_path}/b")
    monkeypatch.setenv("KALLA_API_TOKEN", "s3cret")
    settings = load_settings(evidence_root=tmp_path / "ev", port=None, max_concurrent_jobs=2)
    assert settings.port == 9001  # None overrides fall back to the environment
    assert settings.max_concurrent_jobs == 2
    assert settings.allowed_callback_hosts == ["api.internal", "127.0.0.1"]
    assert settings.allowed_source_roots == [tmp_path / "a", tmp_path / "b"]
    assert settings.state_dir == (tmp_path / "ev" / ".kalla-runner")
    assert "s3cret" not in repr(settings)
    assert settings.source_roots[-1] == tmp_path / "ev"


def test_defaults_are_safe(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KALLA_ALLOWED_CALLBACK_HOSTS", "KALLA_HOST", "KALLA_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.host == "127.0.0.1"
    assert settings.allowed_callback_hosts == list(LOOPBACK_HOSTS)
    assert settings.allowed_source_roots == []


def test_invalid_values_are_refused() -> None:
    with pytest.raises(ValidationError):
        load_settings(max_concurrent_jobs=0)


def test_every_setting_is_documented() -> None:
    text = DOCS.read_text()
    missing = [name for name in Settings.model_fields if f"KALLA_{name.upper()}" not in text]
    assert not missing, f"docs/RUNNER.md does not document {missing}"
