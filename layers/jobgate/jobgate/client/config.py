"""Where the client finds the API: arguments, then the environment, then a profile file.

Order, first found wins: explicit arguments (the CLI's flags); a profile named explicitly
(`--profile`, `profile=`); the environment (`JOBGATE_URL`, `JOBGATE_API_KEY`, `JOBGATE_WS_URL`);
the default profile of the config file (`JOBGATE_PROFILE`, else the file's `default_profile`,
else `default`); and last, the state file `jobgate dev` writes (`.jobgate/dev.json`, found in the
working folder or any folder above it), so that a local stack needs no set-up at all anywhere inside
its checkout. A key is only taken from the place that names the URL or
from above it: a profile's key is never sent to a URL that came from somewhere else.

The config file is `$JOBGATE_CONFIG`, else `$XDG_CONFIG_HOME/jobgate/config.toml`, else
`~/.config/jobgate/config.toml`:

    default_profile = "dev"

    [profiles.dev]
    url = "http://127.0.0.1:8000"
    api_key = "..."

    [profiles.prod]
    url = "https://abc123.execute-api.eu-west-1.amazonaws.com"
    api_key = "..."
    websocket_url = "wss://def456.execute-api.eu-west-1.amazonaws.com/v1"   # optional
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobgate.client.errors import JobgateClientError
from jobgate.devstate import find_state_file, read_state


class _Nearest:
    """The default of `resolve_settings(dev_state=)`: the nearest `.jobgate/dev.json` upwards."""

    def __repr__(self) -> str:
        return ".jobgate/dev.json"


NEAREST_DEV_STATE = _Nearest()


class ConfigError(JobgateClientError):
    """The client cannot tell which API to call, or the config file is broken."""


@dataclass(frozen=True)
class ClientSettings:
    url: str
    api_key: str | None = None
    websocket_url: str | None = None
    source: str = "arguments"  # where the URL came from, for error messages


def config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("JOBGATE_CONFIG"):
        return Path(env["JOBGATE_CONFIG"]).expanduser()
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "jobgate" / "config.toml"


def load_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc


def _profile(config: Mapping[str, Any], name: str, path: Path, *, required: bool) -> dict[str, Any]:
    profiles = config.get("profiles", {})
    if not isinstance(profiles, dict):
        raise ConfigError(f"{path}: [profiles] must be a table")
    found = profiles.get(name)
    if found is None:
        if required:
            known = ", ".join(sorted(profiles)) or "none"
            raise ConfigError(f"no profile '{name}' in {path} (profiles: {known})")
        return {}
    if not isinstance(found, dict):
        raise ConfigError(f"{path}: [profiles.{name}] must be a table")
    return {k: str(v) for k, v in found.items() if k in ("url", "api_key", "websocket_url")}


def _dev_state(path: Path | None) -> dict[str, str]:
    state = read_state(path)
    out = {"url": state.get("http_url"), "api_key": state.get("api_key")}
    out["websocket_url"] = state.get("ws_url") or state.get("websocket_url")
    return {k: str(v) for k, v in out.items() if v}


def resolve_settings(
    *,
    url: str | None = None,
    api_key: str | None = None,
    websocket_url: str | None = None,
    profile: str | None = None,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
    dev_state: Path | None | _Nearest = NEAREST_DEV_STATE,
) -> ClientSettings:
    """The API to call; ConfigError when no layer names a URL."""
    env = os.environ if env is None else env
    path = config_file or config_path(env)
    config = load_config(path)
    arguments = {"url": url or "", "api_key": api_key or "", "websocket_url": websocket_url or ""}
    environment = {
        "url": env.get("JOBGATE_URL", ""),
        "api_key": env.get("JOBGATE_API_KEY", ""),
        "websocket_url": env.get("JOBGATE_WS_URL", ""),
    }
    layers: list[tuple[str, Mapping[str, str]]]
    if profile:
        layers = [
            ("arguments", arguments),
            (f"profile '{profile}' of {path}", _profile(config, profile, path, required=True)),
            ("the environment", environment),
        ]
    else:
        # Flags and environment are both what the user says now: a flag's URL takes the env's key.
        said = {k: arguments[k] or environment[k] for k in arguments}
        default = env.get("JOBGATE_PROFILE") or str(config.get("default_profile") or "default")
        explicit = bool(env.get("JOBGATE_PROFILE") or config.get("default_profile"))
        layers = [
            ("arguments" if arguments["url"] else "the environment", said),
            (f"profile '{default}' of {path}", _profile(config, default, path, required=explicit)),
        ]
    state_file = find_state_file() if isinstance(dev_state, _Nearest) else dev_state
    layers.append((f"{state_file} (jobgate dev)", _dev_state(state_file)))

    # Layers below the one that names the URL are not read: a key meant for one API is never
    # sent to another.
    chosen: dict[str, str] = {}
    source = ""
    for name, values in layers:
        for key in ("url", "api_key", "websocket_url"):
            if values.get(key) and key not in chosen:
                chosen[key] = values[key]
        if "url" in chosen:
            source = name
            break
    if "url" not in chosen:
        raise ConfigError(
            "no API URL: pass --url, set JOBGATE_URL, or add a profile to "
            f"{path} (or start `make dev` in this checkout)"
        )
    return ClientSettings(
        url=chosen["url"].rstrip("/"),
        api_key=chosen.get("api_key"),
        websocket_url=chosen.get("websocket_url"),
        source=source,
    )
