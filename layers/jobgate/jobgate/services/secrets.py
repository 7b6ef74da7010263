"""Secrets for commands: named by a command set, mapped by the operator, read at run time.

A command set (or one of its commands) declares the names of the secrets it needs (`DATA_TOKEN`).
The operator maps each name to a Secrets Manager secret or an SSM parameter by ARN
(`JOBGATE_COMMAND_SECRETS`); the API refuses a job whose command needs a name the map lacks (422),
and the worker reads the values when the attempt starts its command and puts them in that command's
child environment only. A value is never logged, never written to the job record, and masked
(`***`) in the command's logs and live events if the command prints it (`Redactor`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from jobgate.errors import SecretUnavailable

if TYPE_CHECKING:
    from jobgate.adapters.secrets import SecretStore

# An environment variable's name, as the child will see it.
SECRET_NAME_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,127}$")
_SECRET_ARN_RE = re.compile(
    r"^arn:aws[a-z-]*:(secretsmanager:[a-z0-9-]+:\d{12}:secret:.+|ssm:[a-z0-9-]+:\d{12}:parameter/.+)$"
)
# Variables the worker sets in every child itself (or that decide how it runs): a secret cannot take them.
RESERVED_NAMES = frozenset(
    {"PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "TZ", "MPLBACKEND", "MPLCONFIGDIR", "PYTHONPATH"}
)
_RESERVED_PREFIXES = ("AWS_", "JOBGATE_", "LD_", "PYTHON")
MASK = b"***"
# Parts of a JSON secret shorter than this are not masked on their own: masking every "1" or "db" in
# a command's output would hide what it says and protect nothing.
_MIN_PART_CHARS = 4


def parse_secret_map(text: str) -> dict[str, str]:
    """`NAME=arn,NAME2=arn` (commas or whitespace between entries) -> {name: arn}; raise ValueError."""
    mapping: dict[str, str] = {}
    for entry in re.split(r"[,\s]+", text.strip()):
        if not entry:
            continue
        name, sep, arn = entry.partition("=")
        if not sep or not SECRET_NAME_RE.match(name):
            raise ValueError(f"'{name}' is not a secret name (NAME=arn, NAME in capitals, digits and _)")
        if name in RESERVED_NAMES or name.startswith(_RESERVED_PREFIXES):
            raise ValueError(f"'{name}' is a variable the worker sets itself; name the secret otherwise")
        if not _SECRET_ARN_RE.match(arn):
            raise ValueError(f"secret '{name}': '{arn}' is not the ARN of a secret or an SSM parameter")
        if name in mapping:
            raise ValueError(f"secret '{name}' is mapped twice")
        mapping[name] = arn
    return mapping


class CommandSecrets:
    """The operator's map of secret names, and the values a command's child gets."""

    def __init__(self, mapping: Mapping[str, str], source: SecretStore | None = None) -> None:
        self._mapping = dict(mapping)
        self._source = source

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._mapping)

    def unconfigured(self, wanted: Iterable[str]) -> list[str]:
        """The names of `wanted` that the operator mapped to nothing."""
        return sorted(set(wanted) - self.names)

    def resolve(self, wanted: Iterable[str]) -> dict[str, str]:
        """{name: value} for each secret a command needs, read now (a rotated secret counts at once).

        Raises SecretUnavailable naming the secret (never its value) when one is not mapped, does
        not exist, or is not granted to this role.
        """
        names = sorted(set(wanted))
        missing = self.unconfigured(names)
        if missing:
            raise SecretUnavailable(f"Secret '{missing[0]}' is not configured on this deployment.")
        if names and self._source is None:
            raise SecretUnavailable(f"Secret '{names[0]}' cannot be read here.")
        values: dict[str, str] = {}
        for name in names:
            assert self._source is not None
            try:
                values[name] = self._source.read(self._mapping[name])
            except SecretUnavailable as exc:
                raise SecretUnavailable(f"Secret '{name}': {exc.detail}") from None
        return values


def masked_parts(values: Iterable[str]) -> list[bytes]:
    """What to mask in a command's output: each value, and each string in a JSON object value (a
    Secrets Manager secret often holds `{"username": ..., "password": ...}`)."""
    parts: set[bytes] = set()
    for value in values:
        if value:
            parts.add(value.encode())
        try:
            parsed = json.loads(value)
        except ValueError:
            continue
        if isinstance(parsed, dict):
            for part in parsed.values():
                if isinstance(part, str) and len(part) >= _MIN_PART_CHARS:
                    parts.add(part.encode())
    return sorted(parts, key=len, reverse=True)


class Redactor:
    """Masks secrets in one stream as it goes by, whatever the chunks it arrives in.

    A secret split between two reads must not get out half: the end of a chunk that could be the
    start of a secret is held back until the next chunk says (or `flush`, at the stream's end).
    Only such a tail is held, so output without secrets flows as it did.
    """

    def __init__(self, secrets: Iterable[bytes]) -> None:
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._held = b""

    def feed(self, chunk: bytes) -> bytes:
        if not self._secrets:
            return chunk
        data = self._held + chunk
        for secret in self._secrets:
            data = data.replace(secret, MASK)
        keep = self._prefix_at_end(data)
        self._held = data[len(data) - keep :] if keep else b""
        return data[: len(data) - keep]

    def flush(self) -> bytes:
        """What was held back at the stream's end (the start of a secret that never came whole)."""
        held, self._held = self._held, b""
        return held

    def _prefix_at_end(self, data: bytes) -> int:
        longest = 0
        for secret in self._secrets:
            for size in range(min(len(secret) - 1, len(data)), longest, -1):
                if data.endswith(secret[:size]):
                    longest = size
                    break
        return longest
