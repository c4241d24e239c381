"""Settings: built once from the environment, then passed down.

This is the only module that reads ``os.environ``. Every process (receiver,
worker, beat, CLI) calls ``Settings.from_env()`` at its edge and hands the frozen
result to ``create_app(settings)`` / ``make_celery(settings)``.

Non-secret settings may also come from a YAML file named by ``PAYHOOKS_CONFIG``
(keys are the field names below); the environment wins over the file. Secrets
(webhook secrets, API keys, tokens, DSNs) are read from the environment only.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from models.enums import ClawbackPolicy, FraudPolicy, ZeroAmountInvoices
from models.rules import Plan, Rules

MIB = 1024 * 1024
KIB = 1024

# Bearer tokens guard /api and /metrics: 32 characters is 128 bits as hex (`openssl rand -hex 16`).
MIN_TOKEN_LENGTH = 32
WEB_ROUTES = ("all", "webhooks", "api")


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names it."""


def _secret_list(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _names(raw: Any) -> tuple[str, ...]:
    """A comma-separated list (or a YAML list) of names."""
    return tuple(str(item).strip() for item in raw if str(item).strip()) if isinstance(raw, list) else _secret_list(str(raw))


def _positive_int(raw: Any) -> int:
    if isinstance(raw, (bool, float)):  # YAML's true and 1.9 are not counts
        raise ValueError("must be a whole number")
    value = int(raw)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _positive_float(raw: Any) -> float:
    if isinstance(raw, bool):
        raise ValueError("must be a number")
    value = float(raw)
    if not math.isfinite(value) or value <= 0:
        raise ValueError("must be a positive number")
    return value


def _flag(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text not in ("true", "false", "1", "0", "on", "off", "yes", "no"):
        raise ValueError("must be true or false")
    return text in ("true", "1", "on", "yes")


def _optional_str(raw: Any) -> str | None:
    text = str(raw).strip()
    return text or None


def _log_level(raw: Any) -> str:
    level = str(raw).strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return level


def _log_format(raw: Any) -> str:
    fmt = str(raw).strip().lower()
    if fmt not in ("json", "text"):
        raise ValueError("must be json or text")
    return fmt


def _web_routes(raw: Any) -> str:
    routes = str(raw).strip().lower()
    if routes not in WEB_ROUTES:
        raise ValueError(f"must be one of {', '.join(WEB_ROUTES)}")
    return routes


def _clawback_policy(raw: Any) -> ClawbackPolicy:
    try:
        return ClawbackPolicy(str(raw).strip())
    except ValueError:
        raise ValueError(f"must be one of {[p.value for p in ClawbackPolicy]}") from None


@dataclass(frozen=True)
class CreditPackage:
    """Something the host application sells through POST /api/checkout."""

    id: str
    name: str
    credits: int
    amount_cents: int
    currency: str


def _credit_packages(raw: Any) -> dict[str, CreditPackage]:
    if not isinstance(raw, dict):
        raise ValueError("must map package ids to {name, credits, amount_cents, currency}")
    packages = {}
    for package_id, spec in raw.items():
        if not isinstance(spec, dict):
            raise ValueError(f"package {package_id!r} must be a mapping")
        try:
            packages[str(package_id)] = CreditPackage(
                id=str(package_id),
                name=str(spec.get("name") or package_id),
                credits=_positive_int(spec["credits"]),
                amount_cents=_positive_int(spec["amount_cents"]),
                currency=str(spec.get("currency", "usd")).lower(),
            )
        except KeyError as exc:
            raise ValueError(f"package {package_id!r} lacks {exc.args[0]}") from None
        except ValueError as exc:
            raise ValueError(f"package {package_id!r}: {exc}") from None
    return packages


def _choice(enum):
    def parse(raw: Any):
        try:
            return enum(str(raw).strip().lower())
        except ValueError:
            raise ValueError(f"must be one of {[member.value for member in enum]}") from None

    return parse


_zero_amount_invoices = _choice(ZeroAmountInvoices)
_fraud_policy = _choice(FraudPolicy)


def _subscription_plans(raw: Any) -> dict[str, Plan]:
    """price id -> credits per period, or -> {credits: N, zero_amount_invoices: grant|skip} (either may be left out)."""
    if not isinstance(raw, dict):
        raise ValueError("must map price ids to credits per period")
    plans = {}
    for price, spec in raw.items():
        if isinstance(spec, dict):
            unknown = set(spec) - {"credits", "zero_amount_invoices"}
            if unknown or not spec:
                raise ValueError(f"plan {price!r} takes credits and/or zero_amount_invoices")
            rule, credits = spec.get("zero_amount_invoices"), spec.get("credits")
            plans[str(price)] = Plan(
                _positive_int(credits) if credits is not None else None,
                _zero_amount_invoices(rule) if rule is not None else None,
            )
        else:
            plans[str(price)] = Plan(_positive_int(spec))
    return plans


def _credit_catalog(raw: Any) -> dict[str, int]:
    if not isinstance(raw, dict):
        raise ValueError("must map price ids to credits per unit")
    return {str(price): _positive_int(credits) for price, credits in raw.items()}


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    # A row or advisory lock not granted within this is someone's stuck transaction:
    # the statement fails as a conflict (counted, retried, then dead-lettered alone)
    # rather than stalling every worker that touches that row.
    database_lock_timeout_seconds: float = 5.0
    redis_url: str | None = None
    stripe_webhook_secrets: tuple[str, ...] = ()
    stripe_api_key: str | None = None
    stripe_api_base: str | None = None
    api_token: str | None = None
    sentry_dsn: str | None = None
    port: int = 8000
    # The address web and api listen on; `payhooks run` sets 127.0.0.1 when it fills in
    # its development secrets, so a laptop never serves the well-known dev token to its network.
    web_host: str = "0.0.0.0"
    web_concurrency: int = 2
    # Which routes this web process serves: "all" (the Procfile's web: platforms that
    # route only to web need both), or "webhooks" / "api" when a platform can route
    # /api to a process of its own, so deliveries never share a process with API work.
    web_routes: str = "all"
    # Open connections one web process holds at most (gevent: one greenlet each).
    web_worker_connections: int = 1000
    # Deadlines a client must meet, so a slow or silent one cannot hold the receiver:
    # the request line and headers (and an idle kept-alive connection), then the body.
    request_header_timeout_seconds: int = 5
    request_body_timeout_seconds: float = 10.0
    metrics_token: str | None = None

    # prometheus-client's multiprocess directory, shared by the processes of one machine
    metrics_dir: str | None = None
    log_level: str = "INFO"
    log_format: str = "json"  # or "text"

    # Receiver
    webhook_tolerance_seconds: int = 300
    webhook_max_bytes: int = MIB
    api_max_bytes: int = 64 * KIB
    publish_timeout_seconds: float = 0.5
    publish_attempts: int = 3

    # Workers. Every retry countdown must stay below the broker's visibility
    # timeout: Redis redelivers an unacknowledged message once it is older than
    # that, so a longer countdown would run the task twice (harmless, because
    # processing is idempotent, but wasteful) — see workers/celery_config.py.
    broker_visibility_timeout: int = 3600
    retry_max_attempts: int = 10
    retry_backoff_base_seconds: float = 2.0
    retry_backoff_max_seconds: float = 300.0

    # Business rules
    clawback_policy: ClawbackPolicy = ClawbackPolicy.ALLOW_NEGATIVE
    credit_packages: dict[str, CreditPackage] = field(default_factory=dict)
    subscription_plans: dict[str, Plan] = field(default_factory=dict)
    # Prices sold without credits in their metadata (Payment Links, Pricing Tables): credits per unit.
    credit_catalog: dict[str, int] = field(default_factory=dict)
    zero_amount_invoices: ZeroAmountInvoices = ZeroAmountInvoices.SKIP
    fraud_policy: FraudPolicy = FraudPolicy.OFF
    # How long an event may wait for the one it depends on before it is failed
    # (Stripe retries a delivery for three days).
    hold_window_seconds: int = 3 * 24 * 3600
    held_retry_interval_seconds: int = 60
    checkout_success_url: str | None = None
    checkout_cancel_url: str | None = None

    # The batch consumers (workers/consumer.py): events per transaction; how often a
    # consumer beats; how long a silent one has before its claims go back to the queue;
    # the longest wait between tries of a batch while PostgreSQL is away.
    event_batch_size: int = 100
    consumer_heartbeat_seconds: float = 2.0
    consumer_dead_after_seconds: float = 10.0
    consumer_retry_max_seconds: float = 5.0

    # Retention (models/retention.py)
    retention_payload_days: int = 7
    retention_inbox_days: int = 90
    retention_interval_seconds: int = 3600

    # Recovery (application/recovery.py)
    sweep_interval_seconds: int = 60
    sweep_min_age_seconds: int = 300
    sweep_expiry_grace_seconds: int = 600
    sweep_batch_size: int = 100
    sweep_calls_per_second: float = 20.0
    reconcile_interval_seconds: int = 600
    reconcile_overlap_seconds: int = 600
    reconcile_initial_lookback_seconds: int = 3 * 24 * 3600

    # Outbound: webhooks to the host application, in-process hooks, e-mail receipts
    # (application/outbound.py). Endpoint secrets are stored encrypted with the first
    # of OUTBOUND_SECRET_KEY's Fernet keys (the others still decrypt, while rotating).
    outbound_secret_keys: tuple[str, ...] = ()
    outbound_timeout_seconds: float = 10.0
    outbound_retry_base_seconds: float = 5.0
    outbound_retry_max_seconds: float = 6 * 3600.0
    outbound_retry_window_seconds: int = 3 * 24 * 3600
    outbound_secret_overlap_seconds: int = 24 * 3600
    outbound_kick_interval_seconds: int = 30
    # Off: the outbox is dispatched by beat's kick only (every OUTBOUND_KICK_INTERVAL_SECONDS).
    outbox_dispatch_on_commit: bool = True
    # Modules the worker imports at start so their application.hooks.on(...) handlers are registered.
    hook_modules: tuple[str, ...] = ()
    email_receipts: bool = False
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_from: str | None = None
    smtp_starttls: bool = True

    secret_fields: tuple[str, ...] = field(
        default=("stripe_webhook_secrets", "stripe_api_key", "api_token", "sentry_dsn", "metrics_token",
                 "outbound_secret_keys", "smtp_password"),
        repr=False,
        compare=False,
    )

    def __post_init__(self) -> None:
        for name, var in (("api_token", "API_TOKEN"), ("metrics_token", "METRICS_TOKEN")):
            token = getattr(self, name)
            if token is not None and len(token) < MIN_TOKEN_LENGTH:
                raise SettingsError(
                    f"{var} must be at least {MIN_TOKEN_LENGTH} characters (it is {len(token)}): "
                    "a short bearer token can be guessed; generate one with `openssl rand -hex 32`"
                )
        if self.retention_inbox_days < 35:
            raise SettingsError(
                "RETENTION_INBOX_DAYS must be at least 35: providers redeliver for days and list events "
                "for 30, and an inbox id pruned earlier would let a late copy be applied twice"
            )
        if self.consumer_dead_after_seconds < 2 * self.consumer_heartbeat_seconds:
            raise SettingsError(
                "CONSUMER_DEAD_AFTER_SECONDS must be at least twice CONSUMER_HEARTBEAT_SECONDS, "
                "or a live consumer that misses one beat is taken for dead"
            )
        if self.email_receipts and not (self.smtp_host and self.smtp_from):
            raise SettingsError("EMAIL_RECEIPTS is on, so SMTP_HOST and SMTP_FROM must be set")
        if self.retry_backoff_max_seconds >= self.broker_visibility_timeout:
            raise SettingsError(
                "RETRY_BACKOFF_MAX_SECONDS must stay below BROKER_VISIBILITY_TIMEOUT "
                f"({self.retry_backoff_max_seconds} >= {self.broker_visibility_timeout}), "
                "or Redis redelivers a waiting retry"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from the environment (and PAYHOOKS_CONFIG, if set)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        config_path = env.get("PAYHOOKS_CONFIG")
        if config_path:
            values.update(_read_config_file(Path(config_path)))
        for var, (name, parse) in ENVIRONMENT.items():
            raw = env.get(var)
            if raw is None or raw.strip() == "":
                continue
            values[name] = _parse(var, parse, raw)
        return cls(**values)

    def __repr__(self) -> str:  # never print a secret, even by accident
        shown = []
        for f in dataclasses.fields(self):
            if not f.repr:
                continue
            value = getattr(self, f.name)
            if f.name in self.secret_fields and value:
                value = "<set>"
            elif isinstance(value, str) and "://" in value:
                value = redact_url(value)  # every URL-valued setting: passwords and secret query values
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    def rules(self) -> Rules:
        return Rules(
            clawback_policy=self.clawback_policy,
            subscription_plans=dict(self.subscription_plans),
            credit_catalog=dict(self.credit_catalog),
            zero_amount_invoices=self.zero_amount_invoices,
            fraud_policy=self.fraud_policy,
        )

    def require(self, name: str, why: str) -> Any:
        """Return a setting, or raise a SettingsError saying what needs it."""
        value = getattr(self, name)
        if not value:
            var = next((v for v, (n, _) in ENVIRONMENT.items() if n == name), name)
            raise SettingsError(f"{var} is not set; {why}")
        return value


# environment variable -> (field, parser)
ENVIRONMENT: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "DATABASE_URL": ("database_url", _optional_str),
    "DATABASE_LOCK_TIMEOUT_SECONDS": ("database_lock_timeout_seconds", _positive_float),
    "REDIS_URL": ("redis_url", _optional_str),
    "STRIPE_WEBHOOK_SECRET": ("stripe_webhook_secrets", _secret_list),
    "STRIPE_API_KEY": ("stripe_api_key", _optional_str),
    "STRIPE_API_BASE": ("stripe_api_base", _optional_str),
    "API_TOKEN": ("api_token", _optional_str),
    "SENTRY_DSN": ("sentry_dsn", _optional_str),
    "PORT": ("port", _positive_int),
    "PROMETHEUS_MULTIPROC_DIR": ("metrics_dir", _optional_str),
    "LOG_LEVEL": ("log_level", _log_level),
    "LOG_FORMAT": ("log_format", _log_format),
    "WEB_HOST": ("web_host", _optional_str),
    "WEB_CONCURRENCY": ("web_concurrency", _positive_int),
    "WEB_ROUTES": ("web_routes", _web_routes),
    "WEB_WORKER_CONNECTIONS": ("web_worker_connections", _positive_int),
    "REQUEST_HEADER_TIMEOUT_SECONDS": ("request_header_timeout_seconds", _positive_int),
    "REQUEST_BODY_TIMEOUT_SECONDS": ("request_body_timeout_seconds", _positive_float),
    "METRICS_TOKEN": ("metrics_token", _optional_str),
    "STRIPE_WEBHOOK_TOLERANCE": ("webhook_tolerance_seconds", _positive_int),
    "WEBHOOK_MAX_BYTES": ("webhook_max_bytes", _positive_int),
    "API_MAX_BYTES": ("api_max_bytes", _positive_int),
    "PUBLISH_TIMEOUT_SECONDS": ("publish_timeout_seconds", _positive_float),
    "PUBLISH_ATTEMPTS": ("publish_attempts", _positive_int),
    "BROKER_VISIBILITY_TIMEOUT": ("broker_visibility_timeout", _positive_int),
    "RETRY_MAX_ATTEMPTS": ("retry_max_attempts", _positive_int),
    "RETRY_BACKOFF_BASE_SECONDS": ("retry_backoff_base_seconds", _positive_float),
    "RETRY_BACKOFF_MAX_SECONDS": ("retry_backoff_max_seconds", _positive_float),
    "CLAWBACK_POLICY": ("clawback_policy", _clawback_policy),
    "HOLD_WINDOW_SECONDS": ("hold_window_seconds", _positive_int),
    "HELD_RETRY_INTERVAL_SECONDS": ("held_retry_interval_seconds", _positive_int),
    "CHECKOUT_SUCCESS_URL": ("checkout_success_url", _optional_str),
    "CHECKOUT_CANCEL_URL": ("checkout_cancel_url", _optional_str),
    "EVENT_BATCH_SIZE": ("event_batch_size", _positive_int),
    "CONSUMER_HEARTBEAT_SECONDS": ("consumer_heartbeat_seconds", _positive_float),
    "CONSUMER_DEAD_AFTER_SECONDS": ("consumer_dead_after_seconds", _positive_float),
    "CONSUMER_RETRY_MAX_SECONDS": ("consumer_retry_max_seconds", _positive_float),
    "ZERO_AMOUNT_INVOICES": ("zero_amount_invoices", _zero_amount_invoices),
    "FRAUD_POLICY": ("fraud_policy", _fraud_policy),
    "RETENTION_PAYLOAD_DAYS": ("retention_payload_days", _positive_int),
    "RETENTION_INBOX_DAYS": ("retention_inbox_days", _positive_int),
    "RETENTION_INTERVAL_SECONDS": ("retention_interval_seconds", _positive_int),
    "SWEEP_INTERVAL_SECONDS": ("sweep_interval_seconds", _positive_int),
    "SWEEP_MIN_AGE_SECONDS": ("sweep_min_age_seconds", _positive_int),
    "SWEEP_EXPIRY_GRACE_SECONDS": ("sweep_expiry_grace_seconds", _positive_int),
    "SWEEP_BATCH_SIZE": ("sweep_batch_size", _positive_int),
    "SWEEP_CALLS_PER_SECOND": ("sweep_calls_per_second", _positive_float),
    "RECONCILE_INTERVAL_SECONDS": ("reconcile_interval_seconds", _positive_int),
    "RECONCILE_OVERLAP_SECONDS": ("reconcile_overlap_seconds", _positive_int),
    "RECONCILE_INITIAL_LOOKBACK_SECONDS": ("reconcile_initial_lookback_seconds", _positive_int),
    "OUTBOUND_SECRET_KEY": ("outbound_secret_keys", _secret_list),
    "OUTBOUND_TIMEOUT_SECONDS": ("outbound_timeout_seconds", _positive_float),
    "OUTBOUND_RETRY_BASE_SECONDS": ("outbound_retry_base_seconds", _positive_float),
    "OUTBOUND_RETRY_MAX_SECONDS": ("outbound_retry_max_seconds", _positive_float),
    "OUTBOUND_RETRY_WINDOW_SECONDS": ("outbound_retry_window_seconds", _positive_int),
    "OUTBOUND_SECRET_OVERLAP_SECONDS": ("outbound_secret_overlap_seconds", _positive_int),
    "OUTBOUND_KICK_INTERVAL_SECONDS": ("outbound_kick_interval_seconds", _positive_int),
    "OUTBOX_DISPATCH_ON_COMMIT": ("outbox_dispatch_on_commit", _flag),
    "HOOK_MODULES": ("hook_modules", _names),
    "EMAIL_RECEIPTS": ("email_receipts", _flag),
    "SMTP_HOST": ("smtp_host", _optional_str),
    "SMTP_PORT": ("smtp_port", _positive_int),
    "SMTP_USERNAME": ("smtp_username", _optional_str),
    "SMTP_PASSWORD": ("smtp_password", _optional_str),
    "SMTP_FROM": ("smtp_from", _optional_str),
    "SMTP_STARTTLS": ("smtp_starttls", _flag),
}

# Settings the YAML file may hold: everything but secrets and URLs.
FILE_SETTINGS = {
    "webhook_tolerance_seconds": _positive_int,
    "webhook_max_bytes": _positive_int,
    "api_max_bytes": _positive_int,
    "web_routes": _web_routes,
    "web_host": _optional_str,
    "web_worker_connections": _positive_int,
    "request_header_timeout_seconds": _positive_int,
    "request_body_timeout_seconds": _positive_float,
    "publish_timeout_seconds": _positive_float,
    "publish_attempts": _positive_int,
    "broker_visibility_timeout": _positive_int,
    "retry_max_attempts": _positive_int,
    "retry_backoff_base_seconds": _positive_float,
    "retry_backoff_max_seconds": _positive_float,
    "port": _positive_int,
    "log_level": _log_level,
    "log_format": _log_format,
    "web_concurrency": _positive_int,
    "stripe_api_base": _optional_str,
    "clawback_policy": _clawback_policy,
    "credit_packages": _credit_packages,
    "subscription_plans": _subscription_plans,
    "hold_window_seconds": _positive_int,
    "held_retry_interval_seconds": _positive_int,
    "checkout_success_url": _optional_str,
    "checkout_cancel_url": _optional_str,
    "event_batch_size": _positive_int,
    "consumer_heartbeat_seconds": _positive_float,
    "consumer_dead_after_seconds": _positive_float,
    "consumer_retry_max_seconds": _positive_float,
    "credit_catalog": _credit_catalog,
    "zero_amount_invoices": _zero_amount_invoices,
    "fraud_policy": _fraud_policy,
    "retention_payload_days": _positive_int,
    "retention_inbox_days": _positive_int,
    "retention_interval_seconds": _positive_int,
    "sweep_interval_seconds": _positive_int,
    "sweep_min_age_seconds": _positive_int,
    "sweep_expiry_grace_seconds": _positive_int,
    "sweep_batch_size": _positive_int,
    "sweep_calls_per_second": _positive_float,
    "reconcile_interval_seconds": _positive_int,
    "reconcile_overlap_seconds": _positive_int,
    "reconcile_initial_lookback_seconds": _positive_int,
    "outbound_timeout_seconds": _positive_float,
    "outbound_retry_base_seconds": _positive_float,
    "outbound_retry_max_seconds": _positive_float,
    "outbound_retry_window_seconds": _positive_int,
    "outbound_secret_overlap_seconds": _positive_int,
    "outbound_kick_interval_seconds": _positive_int,
    "outbox_dispatch_on_commit": _flag,
    "hook_modules": _names,
    "email_receipts": _flag,
    "smtp_host": _optional_str,
    "smtp_port": _positive_int,
    "smtp_from": _optional_str,
    "smtp_starttls": _flag,
}


def _parse(name: str, parse: Callable[[Any], Any], raw: Any) -> Any:
    try:
        return parse(raw)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"{name}={raw!r} is invalid: {exc}") from None


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise SettingsError(f"PAYHOOKS_CONFIG: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SettingsError(f"PAYHOOKS_CONFIG: {path} is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise SettingsError(f"PAYHOOKS_CONFIG: {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"PAYHOOKS_CONFIG: {path} must hold a mapping of settings")
    unknown = sorted((str(key) for key in set(data) - set(FILE_SETTINGS)))
    if unknown:
        raise SettingsError(
            f"PAYHOOKS_CONFIG: unknown or secret settings {unknown}; "
            f"the file may hold {sorted(FILE_SETTINGS)}"
        )
    return {key: _parse(f"{path}:{key}", FILE_SETTINGS[key], value) for key, value in data.items()}


# Query parameters that carry secrets in connection URLs (libpq's password=, sslpassword=,
# tokens and keys of HTTP APIs); matched as substrings of the lower-cased name.
_SECRET_QUERY_KEYS = ("password", "passwd", "pwd", "secret", "token", "key", "sig", "auth", "credential")


def redact_url(url: str) -> str:
    """Hide the password, and the values of secret-looking query parameters, in a URL."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    before_query, qmark, query = rest.partition("?")
    if "@" in before_query:
        credentials, _, host = before_query.rpartition("@")
        if ":" in credentials:
            before_query = f"{credentials.split(':', 1)[0]}:***@{host}"
    if qmark:
        parts = []
        for item in query.split("&"):
            name, eq, value = item.partition("=")
            secret = eq and value and any(key in name.lower() for key in _SECRET_QUERY_KEYS)
            parts.append(f"{name}=***" if secret else item)
        query = "&".join(parts)
    return f"{scheme}://{before_query}{qmark}{query}"
