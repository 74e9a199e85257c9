"""Settings: env IWORKFLOW_* over a TOML file over defaults, with clear errors."""
from __future__ import annotations

import pytest

from iworkflow.config import load_settings, redact_url
from iworkflow.errors import ConfigurationError


def test_defaults_are_the_embedded_runtime(monkeypatch):
    for var in ("IWORKFLOW_BROKER", "IWORKFLOW_EXECUTOR", "IWORKFLOW_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    s = load_settings()
    assert s.broker == "memory://" and s.executor == "local" and s.is_embedded


def test_a_toml_file_overrides_defaults_and_env_overrides_the_file(tmp_path, monkeypatch):
    cfg = tmp_path / "iworkflow.toml"
    cfg.write_text('[iworkflow]\nbroker = "amqp://u:p@h:5672/"\nslots = 3\nqueue = "gpu"\n')
    monkeypatch.setenv("IWORKFLOW_QUEUE", "cpu")
    s = load_settings(cfg)
    assert (s.broker, s.slots, s.queue) == ("amqp://u:p@h:5672/", 3, "cpu")


def test_an_unknown_setting_in_the_file_is_named(tmp_path):
    cfg = tmp_path / "iworkflow.toml"
    cfg.write_text('brokr = "amqp://"\n')
    with pytest.raises(ConfigurationError, match=r"unknown setting\(s\) \['brokr'\]"):
        load_settings(cfg)


def test_a_wrongly_typed_setting_is_named(monkeypatch):
    monkeypatch.setenv("IWORKFLOW_SLOTS", "many")
    with pytest.raises(ConfigurationError, match="setting 'slots' must be int"):
        load_settings()


def test_without_a_secret_a_broker_setup_warns(monkeypatch, caplog):
    monkeypatch.delenv("IWORKFLOW_SECRET", raising=False)
    load_settings(broker="amqp://guest:guest@127.0.0.1:5672/")
    assert "IWORKFLOW_SECRET is not set" in caplog.text
    assert "guest:guest" not in caplog.text


def test_redact_url_hides_the_password():
    assert redact_url("amqp://user:pw@host:5672/") == "amqp://user:***@host:5672/"
    assert redact_url("memory://") == "memory://"
