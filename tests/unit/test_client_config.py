"""Where the client and the CLI find the API: flags, then the environment, then a profile file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jobgate.client.config import ConfigError, resolve_settings

CONFIG = """
default_profile = "staging"

[profiles.staging]
url = "https://staging.example.com/"
api_key = "staging-key"

[profiles.prod]
url = "https://prod.example.com"
api_key = "prod-key"
websocket_url = "wss://ws.prod.example.com/v1"
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG)
    return path


def test_flags_beat_the_environment(config: Path) -> None:
    env = {"JOBGATE_URL": "http://env", "JOBGATE_API_KEY": "env-key"}
    chosen = resolve_settings(
        url="http://flag", api_key="flag-key", env=env, config_file=config, dev_state=None
    )
    assert (chosen.url, chosen.api_key) == ("http://flag", "flag-key")


def test_the_environment_beats_the_default_profile(config: Path) -> None:
    env = {"JOBGATE_URL": "http://env", "JOBGATE_API_KEY": "env-key"}
    chosen = resolve_settings(env=env, config_file=config, dev_state=None)
    assert (chosen.url, chosen.api_key, chosen.source) == ("http://env", "env-key", "the environment")


def test_without_flags_or_environment_the_default_profile_is_used(config: Path) -> None:
    chosen = resolve_settings(env={}, config_file=config, dev_state=None)
    assert (chosen.url, chosen.api_key) == ("https://staging.example.com", "staging-key")


def test_a_profile_named_on_the_command_line_beats_the_environment(config: Path) -> None:
    env = {"JOBGATE_URL": "http://env", "JOBGATE_API_KEY": "env-key"}
    chosen = resolve_settings(profile="prod", env=env, config_file=config, dev_state=None)
    assert (chosen.url, chosen.api_key, chosen.websocket_url) == (
        "https://prod.example.com",
        "prod-key",
        "wss://ws.prod.example.com/v1",
    )


def test_an_env_key_goes_with_a_flag_url_but_a_profiles_key_never_travels_to_another_url(
    config: Path,
) -> None:
    with_env_key = resolve_settings(url="http://flag", env={"JOBGATE_API_KEY": "env-key"}, config_file=config)
    assert (with_env_key.url, with_env_key.api_key) == ("http://flag", "env-key")
    env_url = resolve_settings(env={"JOBGATE_URL": "http://env"}, config_file=config, dev_state=None)
    assert env_url.api_key is None  # not staging-key: it belongs to the staging URL


def test_an_unknown_profile_is_an_error_naming_the_known_ones(config: Path) -> None:
    with pytest.raises(ConfigError, match=r"no profile 'qa' .* \(profiles: prod, staging\)"):
        resolve_settings(profile="qa", env={}, config_file=config)


def test_the_state_of_jobgate_dev_is_the_last_resort(tmp_path: Path) -> None:
    state = tmp_path / "dev.json"
    state.write_text(
        json.dumps({"http_url": "http://127.0.0.1:8000", "api_key": "dev", "websocket_url": "ws://x"})
    )
    chosen = resolve_settings(env={}, config_file=tmp_path / "none.toml", dev_state=state)
    assert (chosen.url, chosen.api_key, chosen.websocket_url) == ("http://127.0.0.1:8000", "dev", "ws://x")


def test_the_state_of_jobgate_dev_is_found_from_any_folder_inside_the_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkout = tmp_path / "checkout"
    (checkout / ".jobgate").mkdir(parents=True)
    (checkout / ".jobgate" / "dev.json").write_text(
        json.dumps({"http_url": "http://127.0.0.1:8123", "api_key": "k"})
    )
    deep = checkout / "docs" / "notes"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    chosen = resolve_settings(env={}, config_file=tmp_path / "none.toml")
    assert (chosen.url, chosen.api_key) == ("http://127.0.0.1:8123", "k")
    assert chosen.source.startswith(str(checkout / ".jobgate" / "dev.json"))
    monkeypatch.chdir(tmp_path)  # outside the checkout: no stack
    with pytest.raises(ConfigError, match="no API URL"):
        resolve_settings(env={}, config_file=tmp_path / "none.toml")


def test_nothing_configured_says_how_to_configure(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no API URL: pass --url, set JOBGATE_URL"):
        resolve_settings(env={}, config_file=tmp_path / "none.toml", dev_state=None)


def test_a_broken_config_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[profiles\n")
    with pytest.raises(ConfigError, match="cannot read .*config.toml"):
        resolve_settings(env={}, config_file=path)
