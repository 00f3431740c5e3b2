"""API keys: read from the environment, rotated, and kept out of every text.

Keys live only in memory. `KeyRing.redact` removes them from error messages;
a logging filter removes the keys of every live model from the records of the
SDK's and the HTTP stack's loggers (messages, tracebacks, stack text).
"""

from __future__ import annotations

import logging
import os
import weakref

from charforge.errors import MissingAPIKeyError

NO_KEY_PLACEHOLDER = "no-key-needed"
"""Sent as the API key to keyless endpoints (no `api_key_env`, or `api_key_env: null`):
the SDK insists on some key, and local servers ignore it."""

_REDACTED_LOGGERS = ("openai", "httpx", "httpx2", "httpcore", "httpcore2", "aiohttp",
                     "charforge.llm")


# -- secrets -------------------------------------------------------------------
class KeyRing:
    """A model's API keys, handed out round-robin, and redacted from any text."""

    def __init__(self, keys: list[str], *, secret: bool) -> None:
        self._keys = keys
        self._secrets = sorted(keys, key=len, reverse=True) if secret else []
        self._next = 0

    def __repr__(self) -> str:
        return f"<keys: {len(self._keys)}, redacted>"

    def next_index(self) -> int:
        index = self._next % len(self._keys)
        self._next += 1
        return index

    def key(self, index: int) -> str:
        return self._keys[index]

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


class _RedactingFilter(logging.Filter):
    """Removes the keys of every live model from log records (message and traceback)."""

    def __init__(self) -> None:
        super().__init__("charforge-redact-keys")
        self._rings: weakref.WeakSet[KeyRing] = weakref.WeakSet()

    def watch(self, ring: KeyRing) -> None:
        self._rings.add(ring)

    def redact(self, text: str) -> str:
        for ring in list(self._rings):
            text = ring.redact(text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._rings:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to logging's own error handling
            return True
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


_REDACTOR = _RedactingFilter()


def redact_from_logs(ring: KeyRing) -> None:
    """Keep `ring`'s keys out of the logs while it lives. Logger filters do not
    apply to child loggers, so the filter goes on every existing logger under
    the SDK's and the HTTP stack's names (idempotent)."""
    _REDACTOR.watch(ring)
    manager = logging.Logger.manager
    names = [
        name for name in list(manager.loggerDict)
        if any(name == root or name.startswith(root + ".") for root in _REDACTED_LOGGERS)
    ]
    for name in {*names, *_REDACTED_LOGGERS}:
        target = logging.getLogger(name)
        if _REDACTOR not in target.filters:
            target.addFilter(_REDACTOR)


def read_keys(model_name: str, api_key_env: str | list[str] | None, *,
              keyless_allowed: bool = True) -> KeyRing:
    """The keys named by `api_key_env`, read from the environment now; None means a
    keyless endpoint. A variable unset or empty raises `MissingAPIKeyError`, whose one
    line says how to fix it: export it, or (where the endpoint may need no key, i.e.
    `keyless_allowed`) declare the model keyless."""
    if api_key_env is None:
        return KeyRing([NO_KEY_PLACEHOLDER], secret=False)
    names = [api_key_env] if isinstance(api_key_env, str) else api_key_env
    keys = []
    for variable in names:
        value = os.environ.get(variable, "").strip()
        if not value:
            state = "is empty" if variable in os.environ else "is not set"
            fix = "export it (the key is never stored in files)"
            if keyless_allowed:
                fix += (f", or remove api_key_env from model {model_name!r} in "
                        "charforge.yaml if the endpoint needs no key")
            raise MissingAPIKeyError(
                f"model {model_name!r}: environment variable {variable} {state}; {fix}"
            )
        keys.append(value)
    return KeyRing(keys, secret=True)
