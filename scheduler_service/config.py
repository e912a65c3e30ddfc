"""Settings from the environment, read and validated once at start-up.

This is the only module that reads ``os.environ``. A bad value raises
:class:`ConfigError` whose message is one line naming the variable.
"""
from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError


class ConfigError(ValueError):
    """A setting has a value the service cannot start with."""


_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def _boolean(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError("expected one of true/false/1/0/yes/no")


def _integer(minimum: int, maximum: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError("expected a whole number") from None
        if not minimum <= value <= maximum:
            raise ValueError(f"expected a whole number from {minimum} to {maximum}")
        return value

    return parse


def _seconds(maximum: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ValueError("expected a number of seconds") from None
        if not 0 < value <= maximum:  # also refuses nan and inf
            raise ValueError(f"expected a number of seconds > 0 and <= {maximum:g}")
        return value

    return parse


ONE_DAY = 86400.0


def _database_url(raw: str) -> str:
    url = raw.strip()
    if url.startswith("postgres://") or url.startswith("postgresql://"):
        # Heroku-style URLs name no driver; psycopg 3 is the one we ship.
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    try:
        parsed = make_url(url)
        parsed.get_dialect()
        _ = parsed.port  # a non-numeric port fails here, not at the first query
    except (ArgumentError, NoSuchModuleError, ValueError, ImportError):
        raise ValueError("expected a SQLAlchemy URL such as sqlite:///path or postgresql+psycopg://host/db") from None
    return url


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"expected one of {'/'.join(choices)}")
        return value

    return parse


def _webhook_url(raw: str) -> str:
    url = raw.strip()
    parts = urlsplit(url)
    try:
        _ = parts.port  # a non-numeric port fails here
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL")
    return url


def _secret(raw: str) -> str:
    if len(raw.strip()) < 16:
        raise ValueError("expected at least 16 characters")
    return raw.strip()


def _networks(raw: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    networks = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not a network in CIDR form (such as 169.254.0.0/16)") from None
    return tuple(networks)


# A module path: dotted identifiers (a prefix matches that module and those under it).
_MODULE_PREFIX = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*\Z")


def _module_prefixes(raw: str) -> tuple[str, ...] | None:
    """None: any module (``*``); else the prefixes, possibly none at all."""
    items = [part.strip() for part in raw.split(",") if part.strip()]
    if items == ["*"]:
        return None
    for item in items:
        if not _MODULE_PREFIX.match(item):
            raise ValueError(f"{item!r} is not a module name (use '*' alone for any module)")
    return tuple(items)


def _directory(raw: str) -> str:
    path = raw.strip()
    if not os.path.isdir(path) or not os.access(path, os.W_OK):
        raise ValueError("expected an existing directory this process can write to")
    return path


# A default decided by another setting (see load_settings).
DEFAULT_FROM_SHELL = object()

# variable -> (config key, parser, default). The default None for DATABASE_URL
# means "a SQLite file in the instance folder", decided by create_app.
SETTINGS: dict[str, tuple[str, Callable[[str], Any], Any]] = {
    "DATABASE_URL": ("SQLALCHEMY_DATABASE_URI", _database_url, None),
    "SCHEDULER_ENABLED": ("SCHEDULER_ENABLED", _boolean, True),
    "SCHEDULER_TICK_SECONDS": ("SCHEDULER_TICK_SECONDS", _seconds(ONE_DAY), 60.0),
    "SCHEDULER_MAX_WORKERS": ("SCHEDULER_MAX_WORKERS", _integer(1, 1024), 8),
    "SHELL_ACTIONS_ENABLED": ("SHELL_ACTIONS_ENABLED", _boolean, True),
    # auto: a cgroup per shell run where the machine allows it, else process groups only.
    "SHELL_CONTAINMENT": ("SHELL_CONTAINMENT", _choice("auto", "cgroup", "process-group"), "auto"),
    "SHELL_MAX_PROCESSES": ("SHELL_MAX_PROCESSES", _integer(1, 4194304), 1024),
    "RUN_OUTPUT_LIMIT_BYTES": ("RUN_OUTPUT_LIMIT_BYTES", _integer(1, 2**30), 65536),
    "RUN_LEASE_SECONDS": ("RUN_LEASE_SECONDS", _seconds(ONE_DAY), 30.0),
    "SCHEDULER_SHUTDOWN_GRACE_SECONDS": ("SCHEDULER_SHUTDOWN_GRACE_SECONDS", _integer(0, 86400), 30),
    "MAX_REQUEST_BYTES": ("MAX_CONTENT_LENGTH", _integer(1, 2**31), 1048576),
    # Operations (scheduler_service/ops): metrics, alerts, retention, logs.
    "METRICS_PUBLIC": ("METRICS_PUBLIC", _boolean, False),
    "PROMETHEUS_MULTIPROC_DIR": ("PROMETHEUS_MULTIPROC_DIR", _directory, None),
    "ALERT_WEBHOOK_URL": ("ALERT_WEBHOOK_URL", _webhook_url, None),
    "ALERT_WEBHOOK_SECRET": ("ALERT_WEBHOOK_SECRET", _secret, None),
    # Whole seconds: the delivery backoff is a RetryPolicy (ops/alerts.py), whose delays are.
    "ALERT_RETRY_BASE_SECONDS": ("ALERT_RETRY_BASE_SECONDS", _integer(1, 3600), 15),
    "RUN_RETENTION_DAYS": ("RUN_RETENTION_DAYS", _integer(0, 36500), 90),
    "RUN_RETENTION_PER_TASK": ("RUN_RETENTION_PER_TASK", _integer(0, 2**31 - 1), 10000),
    # The first pass waits a minute after the engine starts, out of the way of its first ticks.
    "RETENTION_FIRST_PASS_DELAY_SECONDS": ("RETENTION_FIRST_PASS_DELAY_SECONDS", _seconds(ONE_DAY), 60.0),
    "RETENTION_INTERVAL_SECONDS": ("RETENTION_INTERVAL_SECONDS", _seconds(ONE_DAY), 300.0),
    "LOG_FORMAT": ("LOG_FORMAT", _choice("text", "json"), "text"),
    # Signs admin sessions; unset, a key is made once and kept in the instance folder.
    "SECRET_KEY": ("SECRET_KEY", _secret, None),
    "SESSION_COOKIE_SECURE": ("SESSION_COOKIE_SECURE", _boolean, False),
    # Guard rails for actions (README, "Security"). PYTHON_ACTIONS_MODULES' default depends on
    # SHELL_ACTIONS_ENABLED, so load_settings fills it in: "*" (None) or nothing at all.
    "PYTHON_ACTIONS_MODULES": ("PYTHON_ACTIONS_MODULES", _module_prefixes, DEFAULT_FROM_SHELL),
    "HTTP_ACTIONS_DENY_NETWORKS": (
        "HTTP_ACTIONS_DENY_NETWORKS", _networks, _networks("169.254.0.0/16,fe80::/10,fd00:ec2::254/128"),
    ),
    "SHELL_INHERIT_ENV": ("SHELL_INHERIT_ENV", _boolean, False),
}


def load_settings(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Return Flask config keys for every setting, from ``environ`` or defaults."""
    environ = os.environ if environ is None else environ
    settings: dict[str, Any] = {}
    for variable, (key, parse, default) in SETTINGS.items():
        raw = environ.get(variable)
        if raw is None or raw.strip() == "":
            settings[key] = default
            continue
        try:
            settings[key] = parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{variable}={raw!r}: {exc}") from None
    return settings


def settle_defaults(config: dict[str, Any]) -> None:
    """Fill in the defaults that depend on other settings, once every override is known."""
    if config.get("PYTHON_ACTIONS_MODULES", DEFAULT_FROM_SHELL) is DEFAULT_FROM_SHELL:
        # Any callable can start a shell (subprocess:getoutput): with shell actions off, so are python ones.
        config["PYTHON_ACTIONS_MODULES"] = None if config["SHELL_ACTIONS_ENABLED"] else ()

