"""Configuration: where the URL comes from, how URLs and options become typed settings.

Resolution order for :func:`polybus.connect` without a URL: ``POLYBUS_URL``, then
``[tool.polybus]`` in ``pyproject.toml`` or a ``polybus.toml`` in the working directory,
else ``memory://``. Adapters turn the URL plus options into a frozen dataclass with
:func:`parse_settings`, which names the bad field in every error. Nothing here logs or
formats a password: :func:`redact` is applied to every URL that is shown.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from .errors import ConfigError

__all__ = ["ParsedUrl", "parse_settings", "parse_url", "redact", "resolve"]

DEFAULT_URL = "memory://"
ENV_VAR = "POLYBUS_URL"

S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class ParsedUrl:
    """A broker URL split into parts. ``password`` never appears in ``repr``."""

    scheme: str
    hosts: tuple[str, ...]
    path: str
    query: Mapping[str, str]
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)

    def host_port(self, default_port: int) -> list[tuple[str, int]]:
        """Each ``host[:port]`` of the URL as a pair, ``default_port`` filled in. An
        IPv6 literal keeps its brackets (``[::1]``), so ``f"{host}:{port}"`` is an
        address again."""
        return [_split_host(item, default_port) for item in self.hosts]


def _split_host(item: str, default_port: int) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` -> (host, port), checked."""
    try:
        parts = urlsplit(f"//{item}")
        port = parts.port
    except ValueError as exc:
        raise ConfigError("url", f"bad host {item!r}: {exc}") from None
    host = parts.hostname or ""
    if not host:
        raise ConfigError("url", f"bad host {item!r}: no host name")
    if ":" in host:  # an IPv6 literal: keep it bracketed, as it was written
        host = f"[{host}]"
    if port == 0:
        raise ConfigError("url", f"bad host {item!r}: port 0")
    return host, default_port if port is None else port


def parse_url(url: str) -> ParsedUrl:
    """Split ``scheme://[user[:password]@]host[:port][,host[:port]...]/path?query``.

    Hosts may be IPv6 literals in brackets (``[::1]:9092``). Every malformed part (an
    unbalanced bracket, a port that is not a number from 1 to 65535, a query name given
    twice) raises :class:`ConfigError` naming ``url`` (or the query name); the message
    never contains the password.
    """
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError("url", f"expected SCHEME://..., got {redact(str(url))!r}")
    scheme, rest = url.split("://", 1)
    if not scheme or not scheme.replace("+", "").isalnum():
        raise ConfigError("url", f"invalid scheme {scheme[:20]!r}")
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    netloc, path_and_query = rest[:cut], rest[cut:]
    username = password = None
    if "@" in netloc:
        userinfo, netloc = netloc.rsplit("@", 1)
        user, colon, pw = userinfo.partition(":")
        username = unquote(user)
        password = unquote(pw) if colon else None
    hosts = tuple(h for h in netloc.split(",") if h)
    for item in hosts:
        _split_host(item, 1)  # checks brackets and the port range
    try:
        parts = urlsplit(f"x://h{path_and_query}")
    except ValueError as exc:
        raise ConfigError("url", f"malformed URL {redact(url)!r}: {exc}") from None
    query: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in query:
            raise ConfigError(name, "given more than once in the URL")
        query[name] = value
    return ParsedUrl(scheme.lower(), hosts, unquote(parts.path), query, username, password)


def redact(url: str) -> str:
    """``url`` with any password (and secret-looking query values) replaced by ``***``."""
    # a malformed URL (no scheme) is shown in errors too: redact its userinfo as well
    scheme, has_scheme, rest = url.partition("://")
    if not has_scheme:
        scheme, rest = "", url
    head, sep, query = rest.partition("?")
    if "@" in head:
        userinfo, hostpart = head.rsplit("@", 1)
        user, colon, password = userinfo.partition(":")
        if not colon or unquote(user) == unquote(password):
            # a lone user part is often a token (nats://TOKEN@host), and in guest:guest
            # the user name is the secret too
            user = "***"
        head = f"{user}:***@{hostpart}" if colon else f"{user}@{hostpart}"
    if sep:
        pairs = []
        for name, value in parse_qsl(query, keep_blank_values=True):
            shown = "***" if is_secret_name(name) else value
            pairs.append(f"{quote(name)}={quote(shown, safe='*:/.,')}")
        head = f"{head}?{'&'.join(pairs)}"
    return f"{scheme}://{head}" if has_scheme else head


_SECRET_WORDS = ("password", "secret", "token", "credential", "sasl.password", "key_id")


def is_secret_name(name: str) -> bool:
    """True for option names whose values must never be shown."""
    low = name.lower()
    return any(word in low for word in _SECRET_WORDS) or low.endswith("access_key")


def redact_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``options`` safe to show: secret-looking values replaced by ``***``."""
    return {k: ("***" if is_secret_name(k) else v) for k, v in options.items()}


def resolve(url: str | None, cwd: Path | None = None) -> tuple[str, dict[str, Any]]:
    """Find the URL (and file options) to connect to when ``url`` may be None."""
    if url:
        return url, {}
    env = os.environ.get(ENV_VAR)
    if env:
        return env, {}
    base = cwd or Path.cwd()
    for path, table in ((base / "polybus.toml", None), (base / "pyproject.toml", "polybus")):
        if not path.is_file():
            continue
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(str(path), f"cannot read: {exc}") from exc
        section = data.get("tool", {}).get(table, None) if table else data
        if not section:
            continue
        found = section.get("url")
        if not isinstance(found, str):
            raise ConfigError(f"{path.name}: url", "missing or not a string")
        options = section.get("options", {})
        if not isinstance(options, dict):
            raise ConfigError(f"{path.name}: options", "must be a table")
        return found, dict(options)
    return DEFAULT_URL, {}


def parse_settings(cls: type[S], values: Mapping[str, Any], *, source: str = "") -> S:
    """Build the frozen dataclass ``cls`` from ``values`` (URL query strings or Python
    values), coercing strings to each field's type. Unknown names and bad values raise
    :class:`ConfigError` naming the field."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for name, raw in values.items():
        if name not in known:
            expected = ", ".join(sorted(known))
            raise ConfigError(name, f"unknown option{source}; expected one of: {expected}")
        kwargs[name] = _coerce(name, raw, hints[name])
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(cls.__name__, str(exc)) from exc


def _coerce(name: str, raw: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        blank = raw is None or (isinstance(raw, str) and raw.lower() in ("", "none", "null"))
        if blank and len(args) < len(typing.get_args(hint)):
            return None
        for arg in args:
            try:
                return _coerce(name, raw, arg)
            except ConfigError:
                continue
        raise ConfigError(name, f"{_show(name, raw)} is not {_type_name(hint)}")
    if origin is typing.Literal:
        allowed = typing.get_args(hint)
        if raw not in allowed:
            raise ConfigError(name, f"{_show(name, raw)} is not one of {list(allowed)}")
        return raw
    if hint is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(raw, str) and raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(name, f"{_show(name, raw)} is not a boolean")
    if hint in (int, float):
        if isinstance(raw, bool):
            raise ConfigError(name, f"{_show(name, raw)} is not a number")
        try:
            value = hint(raw)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(name, f"{_show(name, raw)} is not {_TYPE_NAMES[hint]}") from None
        if hint is float and value != value:  # NaN
            raise ConfigError(name, f"{_show(name, raw)} is not a number")
        if value < 0:
            raise ConfigError(name, f"must be >= 0, got {value}")
        return value
    if hint is str:
        if not isinstance(raw, str):
            raise ConfigError(name, f"{_show(name, raw)} is not a string")
        return raw
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        if not isinstance(raw, Mapping):
            raise ConfigError(name, "must be a mapping")
        return dict(raw)
    return raw


def _show(name: str, raw: Any) -> str:
    return "'***'" if is_secret_name(name) else repr(raw)


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "a boolean"}


def _type_name(hint: Any) -> str:
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    names = [_TYPE_NAMES.get(a, getattr(a, "__name__", str(a))) for a in args]
    optional = type(None) in typing.get_args(hint)
    return " or ".join(names) + (" (or none)" if optional else "")
