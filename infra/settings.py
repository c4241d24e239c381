"""Settings: built once from the environment, then passed down.

This is the only module that reads ``os.environ``. Every process (receiver,
worker, beat, CLI) calls ``Settings.from_env()`` at its edge and hands the frozen
result to ``create_app(settings)`` / ``make_celery(settings)``.

Each setting is declared once below: its environment variable (the field's
alias), its default, its rule (the parser in its type) and what it is for.
Non-secret settings may also come from a YAML file named by ``PAYHOOKS_CONFIG``
(keys are the field names); the environment wins over the file. Secrets
(``SecretStr``: webhook secrets, API keys, tokens, the Sentry DSN) and connection
URLs are read from the environment only.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BeforeValidator, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from models.enums import ClawbackPolicy, FraudPolicy, ZeroAmountInvoices
from models.rules import Plan, Rules

MIB = 1024 * 1024
KIB = 1024

# Bearer tokens guard /api and /metrics: 32 characters is 128 bits as hex (`openssl rand -hex 16`).
MIN_TOKEN_LENGTH = 32
WEB_ROUTES = ("all", "webhooks", "api")


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names it."""


def _reveal(value: Any) -> Any:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def _secret_list(raw: Any) -> tuple[SecretStr, ...]:
    """``whsec_new,whsec_old`` (order kept: the first signs, all verify) or a sequence of secrets."""
    parts = raw.split(",") if isinstance(raw, str) else (_reveal(part) for part in raw)
    return tuple(SecretStr(part.strip()) for part in parts if part.strip())


def _optional_secret(raw: Any) -> SecretStr | None:
    text = _optional_str(_reveal(raw))
    return SecretStr(text) if text else None


def _id_list(raw: Any) -> tuple[str, ...]:
    """A comma-separated list (environment) or a list (YAML)."""
    parts = raw if isinstance(raw, (list, tuple)) else str(raw).split(",")
    return tuple(str(part).strip() for part in parts if str(part).strip())


PAYPAL_ENVIRONMENTS = ("live", "sandbox")
PAYPAL_VERIFICATIONS = ("offline", "online")


def _one_of(*allowed: str) -> Callable[[Any], str]:
    def parse(raw: Any) -> str:
        value = str(raw).strip().lower()
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return value

    return parse


def _flag(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text not in ("true", "false", "1", "0", "on", "off", "yes", "no"):
        raise ValueError("must be true or false")
    return text in ("true", "1", "on", "yes")


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


def _optional_str(raw: Any) -> str | None:
    if raw is None:
        return None
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
        if isinstance(spec, CreditPackage):
            packages[str(package_id)] = spec
            continue
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
        if isinstance(spec, Plan):
            plans[str(price)] = spec
        elif isinstance(spec, dict):
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


def _rule(parse: Callable[[Any], Any]) -> BeforeValidator:
    """A parser above as the field's validator; its TypeError (``int(None)``) is a broken rule too."""

    def validate(raw: Any) -> Any:
        try:
            return parse(raw)
        except TypeError as exc:
            raise ValueError(str(exc)) from None

    return BeforeValidator(validate)


class _Secret:
    """Marks a secret: read from the environment only, never shown."""


class _EnvironmentOnly:
    """Marks a connection setting (URLs with passwords, the metrics directory): environment only."""


PositiveInt = Annotated[int, _rule(_positive_int)]
Flag = Annotated[bool, _rule(_flag)]
Names = Annotated[tuple[str, ...], NoDecode, _rule(_id_list)]
PositiveFloat = Annotated[float, _rule(_positive_float)]
OptionalStr = Annotated[str | None, _rule(_optional_str)]
Text = Annotated[str, _rule(_optional_str)]
Secret = Annotated[SecretStr | None, _rule(_optional_secret), _Secret()]
SecretList = Annotated[tuple[SecretStr, ...], NoDecode, _rule(_secret_list), _Secret()]
Connection = Annotated[str | None, _rule(_optional_str), _EnvironmentOnly()]


def _setting(default: Any, env: str | None, doc: str) -> Any:
    """One setting: its default, its environment variable (None: PAYHOOKS_CONFIG only), what it is for."""
    if isinstance(default, dict):
        return Field(default_factory=dict, description=doc)
    return Field(default, validation_alias=env, description=doc)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        validate_by_name=True,
        validate_by_alias=True,
        case_sensitive=True,
    )

    database_url: Connection = _setting(None, "DATABASE_URL", "PostgreSQL URL")
    database_lock_timeout_seconds: PositiveFloat = _setting(
        5.0, "DATABASE_LOCK_TIMEOUT_SECONDS",
        "A row or advisory lock not granted within this is someone's stuck transaction: the statement "
        "fails as a conflict (counted, retried, then dead-lettered alone) rather than stalling every "
        "worker that touches that row.",
    )
    redis_url: Connection = _setting(None, "REDIS_URL", "Redis broker URL")
    stripe_webhook_secrets: SecretList = _setting(
        (), "STRIPE_WEBHOOK_SECRET", "Signing secrets, comma-separated while rotating (the first is the newest)"
    )
    stripe_api_key: Secret = _setting(None, "STRIPE_API_KEY", "Stripe API key (recovery, reconciliation, checkout)")
    stripe_api_base: OptionalStr = _setting(None, "STRIPE_API_BASE", "Base URL of the Stripe API; unset: Stripe's")
    # PayPal is enabled when PAYPAL_WEBHOOK_ID is set.
    paypal_webhook_ids: Annotated[tuple[str, ...], NoDecode, _rule(_id_list)] = _setting(
        (), "PAYPAL_WEBHOOK_ID", "Webhook ids deliveries may be signed for, comma-separated (rotation, sandbox + live)"
    )
    paypal_client_id: OptionalStr = _setting(None, "PAYPAL_CLIENT_ID", "PayPal REST client id (capture, recovery, checkout)")
    paypal_client_secret: Secret = _setting(None, "PAYPAL_CLIENT_SECRET", "PayPal REST client secret")
    paypal_environment: Annotated[str, _rule(_one_of(*PAYPAL_ENVIRONMENTS))] = _setting(
        "live", "PAYPAL_ENVIRONMENT", "live or sandbox: which PayPal REST API"
    )
    paypal_api_base: OptionalStr = _setting(None, "PAYPAL_API_BASE", "Base URL of the PayPal API; unset: PAYPAL_ENVIRONMENT's")
    paypal_verification: Annotated[str, _rule(_one_of(*PAYPAL_VERIFICATIONS))] = _setting(
        "offline", "PAYPAL_VERIFICATION", "offline (certificates, cached) or online (PayPal's verify endpoint)"
    )
    paypal_webhook_tolerance_seconds: PositiveInt = _setting(
        600, "PAYPAL_WEBHOOK_TOLERANCE", "Age or skew of PAYPAL-TRANSMISSION-TIME accepted, in seconds"
    )
    paypal_order_expiry_seconds: PositiveInt = _setting(
        3 * 3600, "PAYPAL_ORDER_EXPIRY_SECONDS",
        "A PayPal order recorded pending and not approved this long is expired by the sweep (after its grace)",
    )
    paypal_ca_file: OptionalStr = _setting(
        None, "PAYPAL_CA_FILE", "PEM trust anchors for PayPal's signing certificates; unset: the certifi bundle"
    )
    api_token: Secret = _setting(None, "API_TOKEN", "Bearer token for /api/*; unset: /api answers 503")
    sentry_dsn: Secret = _setting(None, "SENTRY_DSN", "Error reporting; unset: off")
    port: PositiveInt = _setting(8000, "PORT", "Receiver port")
    web_host: Text = _setting(
        "0.0.0.0", "WEB_HOST",
        "The address web and api listen on; `payhooks run` sets 127.0.0.1 when it fills in its development "
        "secrets, so a laptop never serves the well-known dev token to its network.",
    )
    web_concurrency: PositiveInt = _setting(2, "WEB_CONCURRENCY", "gunicorn processes of a web process")
    web_routes: Annotated[str, _rule(_web_routes)] = _setting(
        "all", "WEB_ROUTES",
        "Which routes this web process serves: all (the Procfile's web: platforms that route only to web "
        "need both), or webhooks / api when a platform can route /api to a process of its own, so "
        "deliveries never share a process with API work.",
    )
    web_worker_connections: PositiveInt = _setting(
        1000, "WEB_WORKER_CONNECTIONS", "Open connections one web process holds at most (gevent: one greenlet each)"
    )
    request_header_timeout_seconds: PositiveInt = _setting(
        5, "REQUEST_HEADER_TIMEOUT_SECONDS",
        "Deadline for a request's line and headers (and an idle kept-alive connection), so a slow or "
        "silent client cannot hold the receiver.",
    )
    request_body_timeout_seconds: PositiveFloat = _setting(
        10.0, "REQUEST_BODY_TIMEOUT_SECONDS", "Deadline for a request's whole body (408 after it)"
    )
    metrics_token: Secret = _setting(None, "METRICS_TOKEN", "Bearer token /metrics wants; unset: /metrics is open")
    metrics_dir: Connection = _setting(
        None, "PROMETHEUS_MULTIPROC_DIR",
        "prometheus-client's multiprocess directory, shared by the processes of one machine",
    )
    log_level: Annotated[str, _rule(_log_level)] = _setting("INFO", "LOG_LEVEL", "Log level")
    log_format: Annotated[str, _rule(_log_format)] = _setting("json", "LOG_FORMAT", "json or text")

    # Receiver
    webhook_tolerance_seconds: PositiveInt = _setting(
        300, "STRIPE_WEBHOOK_TOLERANCE", "Seconds a signature timestamp may be old (or ahead)"
    )
    webhook_max_bytes: PositiveInt = _setting(MIB, "WEBHOOK_MAX_BYTES", "Largest webhook body (413 above)")
    api_max_bytes: PositiveInt = _setting(64 * KIB, "API_MAX_BYTES", "Largest /api body (413 above)")
    publish_timeout_seconds: PositiveFloat = _setting(
        0.5, "PUBLISH_TIMEOUT_SECONDS", "The receiver's bound on one try to reach Redis"
    )
    publish_attempts: PositiveInt = _setting(3, "PUBLISH_ATTEMPTS", "Tries to reach Redis before answering 503")

    # Workers. Every retry countdown must stay below the broker's visibility timeout:
    # Redis redelivers an unacknowledged message once it is older than that, so a longer
    # countdown would run the task twice (harmless, because processing is idempotent,
    # but wasteful) — see workers/celery_config.py.
    broker_visibility_timeout: PositiveInt = _setting(
        3600, "BROKER_VISIBILITY_TIMEOUT", "Seconds before Redis redelivers a Celery message a dead worker took"
    )
    retry_max_attempts: PositiveInt = _setting(
        10, "RETRY_MAX_ATTEMPTS", "Conflicts (locks, deadlocks) tried before an event is dead-lettered"
    )
    retry_backoff_base_seconds: PositiveFloat = _setting(
        2.0, "RETRY_BACKOFF_BASE_SECONDS", "First backoff of Celery task retries"
    )
    retry_backoff_max_seconds: PositiveFloat = _setting(
        300.0, "RETRY_BACKOFF_MAX_SECONDS", "Longest backoff of Celery task retries (below the visibility timeout)"
    )

    # Business rules
    clawback_policy: Annotated[ClawbackPolicy, _rule(_clawback_policy)] = _setting(
        ClawbackPolicy.ALLOW_NEGATIVE, "CLAWBACK_POLICY", "What a clawback does to credits already spent"
    )
    credit_packages: Annotated[dict[str, CreditPackage], _rule(_credit_packages)] = _setting(
        {}, None, "What POST /api/checkout sells: package id -> {name, credits, amount_cents, currency}"
    )
    subscription_plans: Annotated[dict[str, Plan], _rule(_subscription_plans)] = _setting(
        {}, None, "Subscription price id -> credits per paid period, or {credits, zero_amount_invoices}"
    )
    credit_catalog: Annotated[dict[str, int], _rule(_credit_catalog)] = _setting(
        {}, None, "Prices sold without credits in their metadata (Payment Links, Pricing Tables): credits per unit"
    )
    zero_amount_invoices: Annotated[ZeroAmountInvoices, _rule(_zero_amount_invoices)] = _setting(
        ZeroAmountInvoices.SKIP, "ZERO_AMOUNT_INVOICES", "Whether a $0 invoice grants its period's credits"
    )
    fraud_policy: Annotated[FraudPolicy, _rule(_fraud_policy)] = _setting(
        FraudPolicy.OFF, "FRAUD_POLICY", "off, or freeze: hold the unspent credits of a payment under suspicion"
    )
    hold_window_seconds: PositiveInt = _setting(
        3 * 24 * 3600, "HOLD_WINDOW_SECONDS",
        "How long an event may wait for the one it depends on before it is failed "
        "(Stripe retries a delivery for three days)",
    )
    held_retry_interval_seconds: PositiveInt = _setting(
        60, "HELD_RETRY_INTERVAL_SECONDS", "How often held events are tried again"
    )
    checkout_success_url: OptionalStr = _setting(None, "CHECKOUT_SUCCESS_URL", "Where a paid checkout returns")
    checkout_cancel_url: OptionalStr = _setting(None, "CHECKOUT_CANCEL_URL", "Where a cancelled checkout returns")

    # The batch consumers (workers/consumer.py)
    event_batch_size: PositiveInt = _setting(100, "EVENT_BATCH_SIZE", "Most events a consumer applies in one transaction")
    consumer_heartbeat_seconds: PositiveFloat = _setting(
        2.0, "CONSUMER_HEARTBEAT_SECONDS", "How often a consumer beats"
    )
    consumer_dead_after_seconds: PositiveFloat = _setting(
        10.0, "CONSUMER_DEAD_AFTER_SECONDS", "How long a silent consumer has before its claims go back to the queue"
    )
    consumer_retry_max_seconds: PositiveFloat = _setting(
        5.0, "CONSUMER_RETRY_MAX_SECONDS", "Longest wait between tries of a batch while PostgreSQL is away"
    )

    # Retention (models/retention.py)
    retention_payload_days: PositiveInt = _setting(7, "RETENTION_PAYLOAD_DAYS", "Days raw bodies are kept")
    retention_inbox_days: PositiveInt = _setting(90, "RETENTION_INBOX_DAYS", "Days inbox ids are kept (35 at least)")
    retention_outbound_days: PositiveInt = _setting(
        30, "RETENTION_OUTBOUND_DAYS", "Days outbox messages and their delivery log are kept once none is pending"
    )
    retention_interval_seconds: PositiveInt = _setting(3600, "RETENTION_INTERVAL_SECONDS", "How often retention runs")

    # Recovery (application/recovery.py)
    sweep_interval_seconds: PositiveInt = _setting(60, "SWEEP_INTERVAL_SECONDS", "How often pending sessions are swept")
    sweep_min_age_seconds: PositiveInt = _setting(300, "SWEEP_MIN_AGE_SECONDS", "Age before a pending session is swept")
    sweep_expiry_grace_seconds: PositiveInt = _setting(
        600, "SWEEP_EXPIRY_GRACE_SECONDS", "Grace after a session's expiry before the sweep asks"
    )
    sweep_batch_size: PositiveInt = _setting(100, "SWEEP_BATCH_SIZE", "Sessions one sweep asks about")
    sweep_calls_per_second: PositiveFloat = _setting(20.0, "SWEEP_CALLS_PER_SECOND", "Provider API calls a sweep makes")
    reconcile_interval_seconds: PositiveInt = _setting(600, "RECONCILE_INTERVAL_SECONDS", "How often events are reconciled")
    reconcile_overlap_seconds: PositiveInt = _setting(
        600, "RECONCILE_OVERLAP_SECONDS", "How far back each reconciliation reaches past the last one"
    )
    reconcile_initial_lookback_seconds: PositiveInt = _setting(
        3 * 24 * 3600, "RECONCILE_INITIAL_LOOKBACK_SECONDS", "How far back the first reconciliation reaches"
    )
    # Outbound: webhooks to the host application, in-process hooks, e-mail receipts (application/outbound.py).
    outbound_secret_keys: SecretList = _setting(
        (), "OUTBOUND_SECRET_KEY",
        "Fernet keys encrypting endpoint secrets at rest, comma-separated (the first encrypts, all decrypt)",
    )
    outbound_timeout_seconds: PositiveFloat = _setting(10.0, "OUTBOUND_TIMEOUT_SECONDS", "Timeout of one delivery or SMTP call")
    outbound_retry_base_seconds: PositiveFloat = _setting(
        5.0, "OUTBOUND_RETRY_BASE_SECONDS", "First retry of a failed delivery (full-jitter backoff)"
    )
    outbound_retry_max_seconds: PositiveFloat = _setting(
        6 * 3600.0, "OUTBOUND_RETRY_MAX_SECONDS", "Longest wait between retries of a delivery"
    )
    outbound_retry_window_seconds: PositiveInt = _setting(
        3 * 24 * 3600, "OUTBOUND_RETRY_WINDOW_SECONDS", "How long a delivery is retried before it is failed"
    )
    outbound_secret_overlap_seconds: PositiveInt = _setting(
        24 * 3600, "OUTBOUND_SECRET_OVERLAP_SECONDS", "How long a rotated endpoint secret still signs, beside the new one"
    )
    outbound_kick_interval_seconds: PositiveInt = _setting(
        30, "OUTBOUND_KICK_INTERVAL_SECONDS", "How often beat re-sends due deliveries (the safety net)"
    )
    outbox_dispatch_on_commit: Flag = _setting(
        True, "OUTBOX_DISPATCH_ON_COMMIT", "Dispatch the outbox after each commit; off: only beat's kick does"
    )
    hook_modules: Names = _setting(
        (), "HOOK_MODULES", "Modules a worker imports at start, so their application.hooks.on(...) handlers register"
    )
    email_receipts: Flag = _setting(False, "EMAIL_RECEIPTS", "E-mail a receipt on credits.granted and credits.revoked")
    smtp_host: OptionalStr = _setting(None, "SMTP_HOST", "SMTP server for receipts")
    smtp_port: PositiveInt = _setting(587, "SMTP_PORT", "SMTP port")
    smtp_username: OptionalStr = _setting(None, "SMTP_USERNAME", "SMTP login")
    smtp_password: Secret = _setting(None, "SMTP_PASSWORD", "SMTP password")
    smtp_from: OptionalStr = _setting(None, "SMTP_FROM", "From address of receipts")
    smtp_starttls: Flag = _setting(True, "SMTP_STARTTLS", "STARTTLS before login")
    manual_payment_expire_after_days: PositiveInt = _setting(
        14, "MANUAL_PAYMENT_EXPIRE_AFTER_DAYS",
        "A manual payment still pending after this many days is expired by the beat (application/manual.py)",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Settings(...) takes only its arguments; from_env reads the environment and the file.
        return (init_settings,)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise _invalid(exc, {}) from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from the environment (and PAYHOOKS_CONFIG, if set)."""
        env = os.environ if environ is None else environ
        # field -> (where it came from, raw value); the environment wins over the file
        origins: dict[str, tuple[str, Any]] = {}
        config_path = env.get("PAYHOOKS_CONFIG")
        if config_path:
            for name, raw in _ConfigFile(cls, Path(config_path))().items():
                origins[name] = (f"{config_path}:{name}", raw)
        for var, raw in _Environment(cls, env)().items():
            origins[ENVIRONMENT[var]] = (var, raw)
        try:
            return cls(**{name: raw for name, (_, raw) in origins.items()})
        except _InvalidSettings as exc:
            raise _invalid(exc.validation, origins) from None

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.paypal_webhook_ids and self.paypal_verification == "online" and not (
            self.paypal_client_id and self.paypal_client_secret
        ):
            raise SettingsError(
                "PAYPAL_VERIFICATION=online asks PayPal to verify each delivery: "
                "set PAYPAL_CLIENT_ID and PAYPAL_CLIENT_SECRET, or use offline verification"
            )
        for name, var in (("api_token", "API_TOKEN"), ("metrics_token", "METRICS_TOKEN")):
            token = self.reveal(name)
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
        return self

    def replace(self, **changes: Any) -> Settings:
        """A copy with these settings changed, validated like any other (tests build variants this way)."""
        return type(self)(**{name: getattr(self, name) for name in type(self).model_fields} | changes)

    def __repr_args__(self) -> Iterator[tuple[str, Any]]:
        """What repr, str and pretty-printers (rich) show: never a secret, even by accident."""
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name in SECRET_FIELDS and value:
                value = "<set>"
            elif isinstance(value, str) and "://" in value:
                value = redact_url(value)  # every URL-valued setting: passwords and secret query values
            yield name, value

    def __str__(self) -> str:
        return repr(self)

    @property
    def paypal_enabled(self) -> bool:
        return bool(self.paypal_webhook_ids)

    @property
    def paypal_api_url(self) -> str:
        """PAYPAL_API_BASE if set, else the REST API of PAYPAL_ENVIRONMENT."""
        if self.paypal_api_base:
            return self.paypal_api_base
        return "https://api-m.sandbox.paypal.com" if self.paypal_environment == "sandbox" else "https://api-m.paypal.com"

    def rules(self) -> Rules:
        return Rules(
            clawback_policy=self.clawback_policy,
            subscription_plans=dict(self.subscription_plans),
            credit_catalog=dict(self.credit_catalog),
            zero_amount_invoices=self.zero_amount_invoices,
            fraud_policy=self.fraud_policy,
        )

    def reveal(self, name: str) -> Any:
        """A setting's value with its secrets in clear (for the one call that uses them); None when unset."""
        value = getattr(self, name)
        if isinstance(value, tuple):
            return tuple(_reveal(item) for item in value)
        return _reveal(value)

    def require(self, name: str, why: str) -> Any:
        """Return a setting (a secret in clear), or raise a SettingsError saying what needs it."""
        value = self.reveal(name)
        if not value:
            var = type(self).model_fields[name].validation_alias or name
            raise SettingsError(f"{var} is not set; {why}")
        return value


# environment variable -> field
ENVIRONMENT: dict[str, str] = {
    field.validation_alias: name
    for name, field in Settings.model_fields.items()
    if isinstance(field.validation_alias, str)
}
SECRET_FIELDS = frozenset(
    name for name, field in Settings.model_fields.items() if any(isinstance(m, _Secret) for m in field.metadata)
)
# Settings the YAML file may hold: everything but secrets and connection settings.
FILE_SETTINGS = frozenset(
    name
    for name, field in Settings.model_fields.items()
    if not any(isinstance(m, (_Secret, _EnvironmentOnly)) for m in field.metadata)
)


class _Environment(EnvSettingsSource):
    """The settings' variables in the mapping from_env was given; blank ones are unset."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = {var: raw for var, raw in environ.items() if var in ENVIRONMENT and raw.strip()}
        super().__init__(settings_cls, case_sensitive=True)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return self._environ


class _ConfigFile(YamlConfigSettingsSource):
    """PAYHOOKS_CONFIG: a YAML mapping of non-secret settings by field name."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        super().__init__(settings_cls, yaml_file=path)

    @staticmethod
    def _existing_files(files: Any) -> list[Path]:
        return [Path(files)]  # a missing file is an error, not an empty configuration

    def _read_file(self, path: Path) -> dict[str, Any]:
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
        secrets = sorted(str(key) for key in data if key in Settings.model_fields and key not in FILE_SETTINGS)
        if secrets:
            variables = [Settings.model_fields[key].validation_alias for key in secrets]
            raise SettingsError(
                f"PAYHOOKS_CONFIG: {path} may not hold secrets or connection URLs {secrets}; "
                f"set {', '.join(variables)} in the environment"
            )
        unknown = sorted(str(key) for key in set(data) - FILE_SETTINGS)
        if unknown:
            raise SettingsError(
                f"PAYHOOKS_CONFIG: unknown or secret settings {unknown}; "
                f"the file may hold {sorted(FILE_SETTINGS)}"
            )
        return data

    def __call__(self) -> dict[str, Any]:
        return dict(self.yaml_data)  # by field name, as the file has them


class _InvalidSettings(SettingsError):
    """A setting that breaks its own rule; ``validation`` keeps pydantic's account of it."""

    def __init__(self, message: str, validation: ValidationError) -> None:
        super().__init__(message)
        self.validation = validation


def _invalid(validation: ValidationError, origins: Mapping[str, tuple[str, Any]]) -> SettingsError:
    """The first problem, as a sentence naming the variable (or file key), its value and the rule."""
    error = validation.errors()[0]
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, SettingsError):  # a rule between settings: its message says it all
        return cause
    field = str(error["loc"][0]) if error["loc"] else "settings"
    field = ENVIRONMENT.get(field, field)
    label, raw = origins.get(field, (field, error.get("input")))
    problem = str(cause) if cause is not None else error["msg"]
    if field in SECRET_FIELDS:  # never echo a secret
        return _InvalidSettings(f"{label} is invalid: {problem}", validation)
    return _InvalidSettings(f"{label}={raw!r} is invalid: {problem}", validation)


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
