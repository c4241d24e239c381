"""Settings.from_env: defaults, parsing, the YAML file, the retry guard, and secrecy."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from infra.settings import (
    ENVIRONMENT,
    FILE_SETTINGS,
    MIB,
    MIN_TOKEN_LENGTH,
    CreditPackage,
    Settings,
    SettingsError,
    redact_url,
)
from models.enums import ClawbackPolicy, FraudPolicy, ZeroAmountInvoices
from models.rules import Plan, Rules

TOKEN = "t" * MIN_TOKEN_LENGTH

# -- defaults -----------------------------------------------------------------


def test_empty_environment_gives_documented_defaults():
    s = Settings.from_env({})

    assert s.database_url is None
    assert s.redis_url is None
    assert s.stripe_webhook_secrets == ()
    assert s.stripe_api_key is None
    assert s.stripe_api_base is None
    assert s.api_token is None
    assert s.sentry_dsn is None
    assert s.port == 8000
    assert s.web_concurrency == 2
    assert s.webhook_tolerance_seconds == 300
    assert s.webhook_max_bytes == MIB == 1024 * 1024
    assert s.publish_timeout_seconds == 0.5
    assert s.publish_attempts == 3
    assert s.broker_visibility_timeout == 3600
    assert s.retry_max_attempts == 10
    assert s.retry_backoff_base_seconds == 2.0
    assert s.retry_backoff_max_seconds == 300.0
    assert s.event_batch_size == 100
    assert s.consumer_heartbeat_seconds == 2.0
    assert s.consumer_dead_after_seconds == 10.0
    assert s.consumer_retry_max_seconds == 5.0
    assert s.zero_amount_invoices is ZeroAmountInvoices.SKIP
    assert s.fraud_policy is FraudPolicy.OFF
    assert s.credit_catalog == {}
    assert s.subscription_plans == {}
    assert s == Settings()


def test_without_an_environ_argument_reads_os_environ(monkeypatch):
    monkeypatch.delenv("PAYHOOKS_CONFIG", raising=False)
    monkeypatch.setenv("WEB_CONCURRENCY", "7")

    assert Settings.from_env().web_concurrency == 7


def test_settings_are_frozen():
    s = Settings.from_env({})
    with pytest.raises(ValidationError, match="frozen"):
        s.port = 1  # type: ignore[misc]


@pytest.mark.parametrize("blank", ["", "   "])
def test_blank_variables_fall_back_to_defaults(blank):
    s = Settings.from_env({"PORT": blank, "DATABASE_URL": blank, "STRIPE_WEBHOOK_SECRET": blank})

    assert s.port == 8000
    assert s.database_url is None
    assert s.stripe_webhook_secrets == ()


def test_string_settings_are_stripped():
    s = Settings.from_env({"DATABASE_URL": "  postgresql://h/db  ", "API_TOKEN": f" {TOKEN} "})

    assert s.database_url == "postgresql://h/db"
    assert s.api_token.get_secret_value() == TOKEN


# -- STRIPE_WEBHOOK_SECRET ------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("whsec_only", ("whsec_only",)),
        ("whsec_a,whsec_b", ("whsec_a", "whsec_b")),
        ("  whsec_a , whsec_b  ", ("whsec_a", "whsec_b")),
        ("whsec_a,,whsec_b,", ("whsec_a", "whsec_b")),
        (",  ,whsec_a, ,", ("whsec_a",)),
        (" , ", ()),
    ],
    ids=["single", "two", "whitespace", "empty-items", "mostly-empty", "only-separators"],
)
def test_webhook_secret_list_becomes_a_tuple_of_secrets(raw, expected):
    s = Settings.from_env({"STRIPE_WEBHOOK_SECRET": raw})

    assert isinstance(s.stripe_webhook_secrets, tuple)
    assert all(isinstance(secret, SecretStr) for secret in s.stripe_webhook_secrets)
    assert s.reveal("stripe_webhook_secrets") == expected


def test_webhook_secret_order_is_kept():
    # verify_signature reports which secret matched by index: order matters.
    s = Settings.from_env({"STRIPE_WEBHOOK_SECRET": "whsec_new,whsec_old"})
    assert s.reveal("stripe_webhook_secrets") == ("whsec_new", "whsec_old")


# -- numeric variables ----------------------------------------------------------

INT_VARS = [
    ("PORT", "port", "9001", 9001),
    ("WEB_CONCURRENCY", "web_concurrency", "4", 4),
    ("STRIPE_WEBHOOK_TOLERANCE", "webhook_tolerance_seconds", "60", 60),
    ("PAYPAL_WEBHOOK_TOLERANCE", "paypal_webhook_tolerance_seconds", "120", 120),
    ("WEBHOOK_MAX_BYTES", "webhook_max_bytes", "2048", 2048),
    ("API_MAX_BYTES", "api_max_bytes", "4096", 4096),
    ("WEB_WORKER_CONNECTIONS", "web_worker_connections", "200", 200),
    ("REQUEST_HEADER_TIMEOUT_SECONDS", "request_header_timeout_seconds", "3", 3),
    ("PUBLISH_ATTEMPTS", "publish_attempts", "5", 5),
    ("BROKER_VISIBILITY_TIMEOUT", "broker_visibility_timeout", "7200", 7200),
    ("RETRY_MAX_ATTEMPTS", "retry_max_attempts", "25", 25),
    ("HOLD_WINDOW_SECONDS", "hold_window_seconds", "3600", 3600),
    ("HELD_RETRY_INTERVAL_SECONDS", "held_retry_interval_seconds", "30", 30),
    ("SWEEP_INTERVAL_SECONDS", "sweep_interval_seconds", "15", 15),
    ("SWEEP_MIN_AGE_SECONDS", "sweep_min_age_seconds", "120", 120),
    ("SWEEP_EXPIRY_GRACE_SECONDS", "sweep_expiry_grace_seconds", "60", 60),
    ("SWEEP_BATCH_SIZE", "sweep_batch_size", "10", 10),
    ("RECONCILE_INTERVAL_SECONDS", "reconcile_interval_seconds", "300", 300),
    ("RECONCILE_OVERLAP_SECONDS", "reconcile_overlap_seconds", "900", 900),
    ("RECONCILE_INITIAL_LOOKBACK_SECONDS", "reconcile_initial_lookback_seconds", "86400", 86400),
    ("MANUAL_PAYMENT_EXPIRE_AFTER_DAYS", "manual_payment_expire_after_days", "30", 30),
    ("EVENT_BATCH_SIZE", "event_batch_size", "250", 250),
    ("RETENTION_PAYLOAD_DAYS", "retention_payload_days", "14", 14),
    ("RETENTION_INBOX_DAYS", "retention_inbox_days", "60", 60),
    ("RETENTION_OUTBOUND_DAYS", "retention_outbound_days", "45", 45),
    ("PAYPAL_ORDER_EXPIRY_SECONDS", "paypal_order_expiry_seconds", "7200", 7200),
    ("RETENTION_INTERVAL_SECONDS", "retention_interval_seconds", "600", 600),
    ("OUTBOUND_RETRY_WINDOW_SECONDS", "outbound_retry_window_seconds", "7200", 7200),
    ("OUTBOUND_SECRET_OVERLAP_SECONDS", "outbound_secret_overlap_seconds", "600", 600),
    ("OUTBOUND_KICK_INTERVAL_SECONDS", "outbound_kick_interval_seconds", "15", 15),
    ("SMTP_PORT", "smtp_port", "2525", 2525),
]
FLOAT_VARS = [
    ("PUBLISH_TIMEOUT_SECONDS", "publish_timeout_seconds", "1.25", 1.25),
    ("RETRY_BACKOFF_BASE_SECONDS", "retry_backoff_base_seconds", "0.5", 0.5),
    ("RETRY_BACKOFF_MAX_SECONDS", "retry_backoff_max_seconds", "120.5", 120.5),
    ("SWEEP_CALLS_PER_SECOND", "sweep_calls_per_second", "2.5", 2.5),
    # within the default dead-after (10 s): at most half of it
    ("CONSUMER_HEARTBEAT_SECONDS", "consumer_heartbeat_seconds", "1.5", 1.5),
    ("CONSUMER_DEAD_AFTER_SECONDS", "consumer_dead_after_seconds", "12.5", 12.5),
    ("CONSUMER_RETRY_MAX_SECONDS", "consumer_retry_max_seconds", "2.5", 2.5),
    ("DATABASE_LOCK_TIMEOUT_SECONDS", "database_lock_timeout_seconds", "0.25", 0.25),
    ("REQUEST_BODY_TIMEOUT_SECONDS", "request_body_timeout_seconds", "7.5", 7.5),
    ("OUTBOUND_TIMEOUT_SECONDS", "outbound_timeout_seconds", "2.5", 2.5),
    ("OUTBOUND_RETRY_BASE_SECONDS", "outbound_retry_base_seconds", "0.5", 0.5),
    ("OUTBOUND_RETRY_MAX_SECONDS", "outbound_retry_max_seconds", "60.5", 60.5),
]
NUMERIC_VARS = INT_VARS + FLOAT_VARS


def test_numeric_table_covers_every_numeric_variable():
    numeric = {var for var, name in ENVIRONMENT.items() if Settings.model_fields[name].annotation in (int, float)}
    assert numeric == {var for var, *_ in NUMERIC_VARS}


@pytest.mark.parametrize(("var", "field", "raw", "expected"), NUMERIC_VARS, ids=lambda v: str(v))
def test_numeric_variable_is_parsed(var, field, raw, expected):
    s = Settings.from_env({var: raw})

    assert getattr(s, field) == expected
    assert type(getattr(s, field)) is type(expected)


@pytest.mark.parametrize("var", [var for var, *_ in INT_VARS])
def test_integer_variable_tolerates_surrounding_whitespace(var):
    field = ENVIRONMENT[var]
    assert getattr(Settings.from_env({var: " 4000 "}), field) == 4000


def _invalid_numeric_cases():
    for var, *_ in INT_VARS:
        for raw in ("abc", "0", "-1", "1.5", "12abc"):
            yield pytest.param(var, raw, id=f"{var}={raw}")
    for var, *_ in FLOAT_VARS:
        for raw in ("abc", "0", "0.0", "-1", "-0.5", "1,5"):
            yield pytest.param(var, raw, id=f"{var}={raw}")


@pytest.mark.parametrize(("var", "raw"), list(_invalid_numeric_cases()))
def test_invalid_numeric_variable_names_the_variable(var, raw):
    with pytest.raises(SettingsError) as excinfo:
        Settings.from_env({var: raw})

    message = str(excinfo.value)
    assert var in message
    assert "is invalid" in message  # the parse error, not some later check
    assert repr(raw) in message


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("PUBLISH_TIMEOUT_SECONDS", "nan"),
        ("RETRY_BACKOFF_BASE_SECONDS", "nan"),
        # NaN would slip past the RETRY_BACKOFF_MAX < BROKER_VISIBILITY_TIMEOUT guard
        # (nan >= 3600 is False) and backoff_seconds would then return nan.
        ("RETRY_BACKOFF_MAX_SECONDS", "nan"),
        # An infinite publish timeout would break the receiver's "never hangs" promise.
        ("PUBLISH_TIMEOUT_SECONDS", "inf"),
        ("RETRY_BACKOFF_BASE_SECONDS", "inf"),
        ("RETRY_BACKOFF_MAX_SECONDS", "inf"),
        # An infinite heartbeat would never beat; nan would slip past the dead-after guard.
        ("CONSUMER_HEARTBEAT_SECONDS", "nan"),
        ("CONSUMER_DEAD_AFTER_SECONDS", "inf"),
        ("CONSUMER_RETRY_MAX_SECONDS", "inf"),
    ],
)
def test_non_finite_float_is_rejected(var, raw):
    with pytest.raises(SettingsError) as excinfo:
        Settings.from_env({var: raw})

    assert var in str(excinfo.value)


# -- PAYHOOKS_CONFIG ------------------------------------------------------------


def _config(tmp_path, text: str, name: str = "payhooks.yaml") -> dict[str, str]:
    path = tmp_path / name
    path.write_text(text)
    return {"PAYHOOKS_CONFIG": str(path)}


def test_config_file_supplies_non_secret_settings(tmp_path):
    env = _config(
        tmp_path,
        "port: 9100\n"
        "web_concurrency: 3\n"
        "webhook_tolerance_seconds: 120\n"
        "webhook_max_bytes: 4096\n"
        "publish_timeout_seconds: 0.25\n"
        "publish_attempts: 2\n"
        "broker_visibility_timeout: 900\n"
        "retry_max_attempts: 4\n"
        "retry_backoff_base_seconds: 1.5\n"
        "retry_backoff_max_seconds: 60\n"
        "stripe_api_base: http://localhost:12111\n"
        "event_batch_size: 50\n"
        "consumer_heartbeat_seconds: 0.5\n"
        "consumer_dead_after_seconds: 4\n"
        "consumer_retry_max_seconds: 1.5\n"
        "zero_amount_invoices: grant\n"
        "fraud_policy: freeze\n",
    )

    s = Settings.from_env(env)

    assert s.port == 9100
    assert s.web_concurrency == 3
    assert s.webhook_tolerance_seconds == 120
    assert s.webhook_max_bytes == 4096
    assert s.publish_timeout_seconds == 0.25
    assert s.publish_attempts == 2
    assert s.broker_visibility_timeout == 900
    assert s.retry_max_attempts == 4
    assert s.retry_backoff_base_seconds == 1.5
    assert s.retry_backoff_max_seconds == 60.0
    assert s.stripe_api_base == "http://localhost:12111"
    assert s.event_batch_size == 50
    assert s.consumer_heartbeat_seconds == 0.5
    assert s.consumer_dead_after_seconds == 4.0
    assert s.consumer_retry_max_seconds == 1.5
    assert s.zero_amount_invoices is ZeroAmountInvoices.GRANT
    assert s.fraud_policy is FraudPolicy.FREEZE


def test_config_file_values_are_parsed_like_environment_values(tmp_path):
    env = _config(tmp_path, "port: '9200'\npublish_timeout_seconds: '0.75'\n")

    s = Settings.from_env(env)

    assert s.port == 9200
    assert s.publish_timeout_seconds == 0.75


def test_environment_wins_over_config_file(tmp_path):
    env = _config(tmp_path, "port: 9100\nretry_max_attempts: 4\n")
    env["PORT"] = "9300"

    s = Settings.from_env(env)

    assert s.port == 9300
    assert s.retry_max_attempts == 4  # the file still supplies what the environment does not


def test_blank_environment_variable_does_not_hide_file_value(tmp_path):
    env = _config(tmp_path, "port: 9100\n")
    env["PORT"] = ""

    assert Settings.from_env(env).port == 9100


@pytest.mark.parametrize("text", ["", "# nothing here\n", "~\n"])
def test_empty_config_file_gives_defaults(tmp_path, text):
    assert Settings.from_env(_config(tmp_path, text)) == Settings()


@pytest.mark.parametrize(
    ("key", "var"),
    [
        ("api_token", "API_TOKEN"),
        ("stripe_webhook_secrets", "STRIPE_WEBHOOK_SECRET"),
        ("stripe_api_key", "STRIPE_API_KEY"),
        ("sentry_dsn", "SENTRY_DSN"),
        ("metrics_token", "METRICS_TOKEN"),
        ("database_url", "DATABASE_URL"),
        ("redis_url", "REDIS_URL"),
        ("metrics_dir", "PROMETHEUS_MULTIPROC_DIR"),
    ],
)
def test_config_file_may_not_hold_secrets_or_urls(tmp_path, key, var):
    env = _config(tmp_path, f"port: 9100\n{key}: should-not-be-here\n")

    with pytest.raises(SettingsError) as excinfo:
        Settings.from_env(env)

    message = str(excinfo.value)
    assert message == (
        f"PAYHOOKS_CONFIG: {env['PAYHOOKS_CONFIG']} may not hold secrets or connection URLs ['{key}']; "
        f"set {var} in the environment"
    )
    assert "should-not-be-here" not in message


def test_the_file_may_hold_every_setting_but_secrets_and_connections():
    secret_or_connection = {
        "database_url", "redis_url", "metrics_dir", "stripe_webhook_secrets", "stripe_api_key", "api_token",
        "sentry_dsn", "metrics_token", "paypal_client_secret", "outbound_secret_keys", "smtp_password",
    }
    assert FILE_SETTINGS == set(Settings.model_fields) - secret_or_connection


def test_config_file_secret_is_rejected_even_if_environment_also_sets_it(tmp_path):
    env = _config(tmp_path, "api_token: from-file\n")
    env["API_TOKEN"] = "from-env-" + TOKEN

    with pytest.raises(SettingsError, match="api_token"):
        Settings.from_env(env)


@pytest.mark.parametrize("key", ["prot", "secret_fields"])
def test_config_file_unknown_key_is_rejected(tmp_path, key):
    env = _config(tmp_path, f"port: 9100\n{key}: 9101\n")

    with pytest.raises(SettingsError) as excinfo:
        Settings.from_env(env)

    assert str(excinfo.value) == (
        f"PAYHOOKS_CONFIG: unknown or secret settings ['{key}']; the file may hold {sorted(FILE_SETTINGS)}"
    )


def test_config_file_credit_packages_and_environment_over_business_rules(tmp_path):
    env = _config(
        tmp_path,
        "credit_packages:\n  starter: {name: Starter, credits: 100, amount_cents: 999}\n"
        "zero_amount_invoices: grant\nfraud_policy: freeze\n",
    )
    env["FRAUD_POLICY"] = "off"

    s = Settings.from_env(env)

    assert s.credit_packages == {"starter": CreditPackage("starter", "Starter", 100, 999, "usd")}
    assert s.zero_amount_invoices is ZeroAmountInvoices.GRANT
    assert s.fraud_policy is FraudPolicy.OFF


def test_config_file_invalid_value_names_file_and_key(tmp_path):
    env = _config(tmp_path, "publish_attempts: 0\n")

    with pytest.raises(SettingsError) as excinfo:
        Settings.from_env(env)

    message = str(excinfo.value)
    assert "publish_attempts" in message
    assert "payhooks.yaml" in message


def test_missing_config_file_is_a_settings_error(tmp_path):
    missing = tmp_path / "nope.yaml"

    with pytest.raises(SettingsError) as excinfo:
        Settings.from_env({"PAYHOOKS_CONFIG": str(missing)})

    assert "PAYHOOKS_CONFIG" in str(excinfo.value)
    assert "nope.yaml" in str(excinfo.value)


def test_config_path_that_is_a_directory_is_a_settings_error(tmp_path):
    with pytest.raises(SettingsError, match="PAYHOOKS_CONFIG"):
        Settings.from_env({"PAYHOOKS_CONFIG": str(tmp_path)})


@pytest.mark.parametrize(
    "text",
    ["port: [1, 2\n", "port: 1\n  bad indent: 2\n", "{unclosed: 1\n", "key: 'unterminated\n"],
)
def test_invalid_yaml_is_a_settings_error(tmp_path, text):
    with pytest.raises(SettingsError, match="not valid YAML"):
        Settings.from_env(_config(tmp_path, text))


@pytest.mark.parametrize("text", ["- port\n- 9100\n", "just a string\n", "42\n"])
def test_config_file_that_is_not_a_mapping_is_a_settings_error(tmp_path, text):
    with pytest.raises(SettingsError, match="mapping"):
        Settings.from_env(_config(tmp_path, text))


def test_config_file_that_is_not_text_is_a_settings_error(tmp_path):
    # regression: path.read_text() raised UnicodeDecodeError past the OSError/YAMLError handlers
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00port: 1\n")

    with pytest.raises(SettingsError, match="PAYHOOKS_CONFIG"):
        Settings.from_env({"PAYHOOKS_CONFIG": str(path)})


def test_config_file_with_non_string_keys_is_a_settings_error(tmp_path):
    # regression: sorted() over unknown keys of mixed types raised TypeError
    with pytest.raises(SettingsError, match="PAYHOOKS_CONFIG"):
        Settings.from_env(_config(tmp_path, "1: 2\nfoo: 3\n"))


@pytest.mark.parametrize("text", ["port: 1.9\n", "web_concurrency: true\n"])
def test_config_file_non_integer_for_integer_setting_is_rejected(tmp_path, text):
    # regression: int(1.9) == 1 and int(True) == 1 were accepted from YAML, while PORT=1.9 is not
    with pytest.raises(SettingsError):
        Settings.from_env(_config(tmp_path, text))


# -- business rules: zero-amount invoices, fraud policy, catalog, plans ---------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("skip", ZeroAmountInvoices.SKIP),
        ("grant", ZeroAmountInvoices.GRANT),
        (" GRANT ", ZeroAmountInvoices.GRANT),
    ],
)
def test_zero_amount_invoices_is_parsed(raw, expected):
    assert Settings.from_env({"ZERO_AMOUNT_INVOICES": raw}).zero_amount_invoices is expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("off", FraudPolicy.OFF), ("freeze", FraudPolicy.FREEZE), ("Freeze", FraudPolicy.FREEZE)],
)
def test_fraud_policy_is_parsed(raw, expected):
    assert Settings.from_env({"FRAUD_POLICY": raw}).fraud_policy is expected


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("ZERO_AMOUNT_INVOICES", "always"),
        ("ZERO_AMOUNT_INVOICES", "true"),
        ("FRAUD_POLICY", "block"),
        ("FRAUD_POLICY", "1"),
    ],
)
def test_unknown_choice_names_the_variable_and_the_choices(var, raw):
    with pytest.raises(SettingsError) as excinfo:
        Settings.from_env({var: raw})

    message = str(excinfo.value)
    assert var in message
    assert "must be one of" in message


def test_credit_catalog_maps_prices_to_credits_per_unit(tmp_path):
    env = _config(tmp_path, "credit_catalog:\n  price_small: 100\n  price_large: '1000'\n")

    assert Settings.from_env(env).credit_catalog == {"price_small": 100, "price_large": 1000}


@pytest.mark.parametrize(
    "text",
    [
        "credit_catalog: [price_small]\n",
        "credit_catalog: 100\n",
        "credit_catalog:\n  price_small: 0\n",
        "credit_catalog:\n  price_small: -5\n",
        "credit_catalog:\n  price_small: 1.5\n",
        "credit_catalog:\n  price_small: lots\n",
        "credit_catalog:\n  price_small:\n",
    ],
    ids=["list", "number", "zero", "negative", "fraction", "word", "empty"],
)
def test_bad_credit_catalog_is_a_settings_error(tmp_path, text):
    with pytest.raises(SettingsError, match="credit_catalog"):
        Settings.from_env(_config(tmp_path, text))


def test_subscription_plans_take_credits_or_a_mapping(tmp_path):
    env = _config(
        tmp_path,
        "subscription_plans:\n"
        "  price_monthly: 500\n"
        "  price_trial:\n"
        "    credits: 50\n"
        "    zero_amount_invoices: grant\n"
        "  price_yearly:\n"
        "    credits: 6000\n"
        "  price_metered:\n"  # credits from the subscription's metadata; only its $0 rule here
        "    zero_amount_invoices: grant\n",
    )

    plans = Settings.from_env(env).subscription_plans

    assert plans == {
        "price_monthly": Plan(500),
        "price_trial": Plan(50, ZeroAmountInvoices.GRANT),
        "price_yearly": Plan(6000, None),  # no rule of its own: the global one applies
        "price_metered": Plan(None, ZeroAmountInvoices.GRANT),
    }


@pytest.mark.parametrize(
    "text",
    [
        "subscription_plans: [price_monthly]\n",
        "subscription_plans:\n  price_monthly: 0\n",
        "subscription_plans:\n  price_monthly: true\n",
        "subscription_plans:\n  price_monthly:\n    credits: 5\n    extra: 1\n",
        "subscription_plans:\n  price_monthly:\n    credits: 5\n    zero_amount_invoices: often\n",
        "subscription_plans:\n  price_monthly:\n    credits: 2.5\n",
    ],
    ids=["list", "zero", "bool", "unknown-key", "unknown-rule", "fraction"],
)
def test_bad_subscription_plans_are_a_settings_error(tmp_path, text):
    with pytest.raises(SettingsError, match="subscription_plans"):
        Settings.from_env(_config(tmp_path, text))


def test_rules_carry_the_business_settings(tmp_path):
    env = _config(
        tmp_path,
        "credit_catalog:\n  price_small: 100\n"
        "subscription_plans:\n  price_monthly:\n    credits: 500\n    zero_amount_invoices: skip\n",
    )
    env |= {
        "ZERO_AMOUNT_INVOICES": "grant",
        "FRAUD_POLICY": "freeze",
        "CLAWBACK_POLICY": "floor_at_zero",
    }

    rules = Settings.from_env(env).rules()

    assert rules == Rules(
        clawback_policy=ClawbackPolicy.FLOOR_AT_ZERO,
        subscription_plans={"price_monthly": Plan(500, ZeroAmountInvoices.SKIP)},
        credit_catalog={"price_small": 100},
        zero_amount_invoices=ZeroAmountInvoices.GRANT,
        fraud_policy=FraudPolicy.FREEZE,
    )
    # the plan's own rule wins over the global one; a price without a plan follows the global one
    assert rules.zero_amount_rule("price_monthly") is ZeroAmountInvoices.SKIP
    assert rules.zero_amount_rule("price_other") is ZeroAmountInvoices.GRANT
    assert rules.zero_amount_rule(None) is ZeroAmountInvoices.GRANT


def test_rules_do_not_share_the_settings_dicts(tmp_path):
    settings = Settings.from_env(_config(tmp_path, "credit_catalog:\n  price_small: 100\n"))

    rules = settings.rules()
    rules.credit_catalog["price_small"] = 1

    assert settings.credit_catalog == {"price_small": 100}


# -- retry countdown vs broker visibility timeout ------------------------------------


@pytest.mark.parametrize(
    ("visibility", "backoff_max"),
    [("300", "300"), ("100", "300"), ("10", "10.5"), ("60", "61")],
)
def test_backoff_cap_at_or_above_visibility_timeout_is_rejected(visibility, backoff_max):
    env = {"BROKER_VISIBILITY_TIMEOUT": visibility, "RETRY_BACKOFF_MAX_SECONDS": backoff_max}

    with pytest.raises(SettingsError) as excinfo:
        Settings.from_env(env)

    message = str(excinfo.value)
    assert "RETRY_BACKOFF_MAX_SECONDS" in message
    assert "BROKER_VISIBILITY_TIMEOUT" in message


def test_default_backoff_cap_checked_against_lowered_visibility_timeout():
    # Only the timeout is lowered: the default 300 s cap must now be refused.
    with pytest.raises(SettingsError, match="BROKER_VISIBILITY_TIMEOUT"):
        Settings.from_env({"BROKER_VISIBILITY_TIMEOUT": "120"})


def test_backoff_cap_just_below_visibility_timeout_is_accepted():
    s = Settings.from_env({"BROKER_VISIBILITY_TIMEOUT": "6", "RETRY_BACKOFF_MAX_SECONDS": "5.99"})

    assert s.retry_backoff_max_seconds == 5.99
    assert s.broker_visibility_timeout == 6


def test_backoff_guard_applies_to_config_file(tmp_path):
    env = _config(tmp_path, "broker_visibility_timeout: 30\nretry_backoff_max_seconds: 30\n")

    with pytest.raises(SettingsError, match="RETRY_BACKOFF_MAX_SECONDS"):
        Settings.from_env(env)


def test_backoff_guard_applies_to_direct_construction():
    with pytest.raises(SettingsError):
        Settings(broker_visibility_timeout=10, retry_backoff_max_seconds=10.0)


# -- a consumer is dead only after two missed heartbeats -------------------------------


@pytest.mark.parametrize(
    ("heartbeat", "dead_after"), [("2", "3.99"), ("5", "9"), ("0.5", "0.5"), ("6", "10")]
)
def test_dead_after_below_twice_the_heartbeat_is_rejected(heartbeat, dead_after):
    env = {"CONSUMER_HEARTBEAT_SECONDS": heartbeat, "CONSUMER_DEAD_AFTER_SECONDS": dead_after}

    with pytest.raises(SettingsError) as excinfo:
        Settings.from_env(env)

    message = str(excinfo.value)
    assert "CONSUMER_DEAD_AFTER_SECONDS" in message
    assert "CONSUMER_HEARTBEAT_SECONDS" in message


@pytest.mark.parametrize(("heartbeat", "dead_after"), [("2", "4"), ("0.5", "3"), ("5", "10")])
def test_dead_after_of_at_least_twice_the_heartbeat_is_accepted(heartbeat, dead_after):
    s = Settings.from_env(
        {"CONSUMER_HEARTBEAT_SECONDS": heartbeat, "CONSUMER_DEAD_AFTER_SECONDS": dead_after}
    )

    assert s.consumer_dead_after_seconds == float(dead_after)
    assert s.consumer_heartbeat_seconds == float(heartbeat)


def test_dead_after_guard_applies_to_config_file_and_direct_construction(tmp_path):
    with pytest.raises(SettingsError, match="CONSUMER_DEAD_AFTER_SECONDS"):
        Settings.from_env(
            _config(tmp_path, "consumer_heartbeat_seconds: 3\nconsumer_dead_after_seconds: 5\n")
        )
    with pytest.raises(SettingsError, match="CONSUMER_DEAD_AFTER_SECONDS"):
        Settings(consumer_heartbeat_seconds=1.0, consumer_dead_after_seconds=1.5)


# -- secrecy ----------------------------------------------------------------------

SECRET_ENV = {
    "STRIPE_WEBHOOK_SECRET": "whsec_primaryAAA,whsec_rotatedBBB",
    "STRIPE_API_KEY": "sk_test_keyCCC",
    "PAYPAL_CLIENT_SECRET": "paypalSecretJJJ",
    "API_TOKEN": "api-token-DDD-0123456789abcdef0123456789",
    "METRICS_TOKEN": "metrics-token-GGG-0123456789abcdef01234567",
    "STRIPE_API_BASE": "https://proxyuser:proxypwHHH@stripe-proxy.internal/v1",
    "CHECKOUT_SUCCESS_URL": "https://shop.example/ok?session_token=checkoutIII&x=1",
    "SENTRY_DSN": "https://dsnkeyEEE@o1.ingest.sentry.io/1",
    "DATABASE_URL": "postgresql://u:hunter2@h/db",
    "REDIS_URL": "redis://:redispwFFF@localhost:6379/0",
}
SECRET_VALUES = [
    "paypalSecretJJJ",
    "whsec_primaryAAA",
    "whsec_rotatedBBB",
    "sk_test_keyCCC",
    "api-token-DDD",
    "metrics-token-GGG",
    "proxypwHHH",
    "checkoutIII",
    "dsnkeyEEE",
    "hunter2",
    "redispwFFF",
]


def _pretty(settings) -> str:
    from rich.pretty import pretty_repr

    return pretty_repr(settings)


@pytest.mark.parametrize(
    "render",
    [repr, str, lambda s: f"{s}", lambda s: f"{s!r}", _pretty, lambda s: repr(s.replace(port=9000))],
    ids=["repr", "str", "format", "format-r", "rich", "replaced"],
)
def test_repr_never_shows_secrets(render):
    s = Settings.from_env(SECRET_ENV)
    text = render(s)

    for value in SECRET_VALUES:
        assert value not in text
    assert text.startswith("Settings(")


def test_repr_marks_set_secrets_and_redacts_urls():
    text = repr(Settings.from_env(SECRET_ENV))

    assert "stripe_webhook_secrets='<set>'" in text
    assert "api_token='<set>'" in text
    assert "stripe_api_key='<set>'" in text
    assert "sentry_dsn='<set>'" in text
    assert "metrics_token='<set>'" in text
    assert "stripe_api_base='https://proxyuser:***@stripe-proxy.internal/v1'" in text
    assert "checkout_success_url='https://shop.example/ok?session_token=***&x=1'" in text
    assert "database_url='postgresql://u:***@h/db'" in text
    assert "redis_url='redis://:***@localhost:6379/0'" in text
    assert "port=8000" in text  # ordinary settings are still shown
    assert "secret_fields" not in text


def test_secrets_are_secret_strings_and_urls_stay_plain():
    s = Settings.from_env(SECRET_ENV)

    for name in ("stripe_api_key", "api_token", "metrics_token", "sentry_dsn"):
        assert isinstance(getattr(s, name), SecretStr), name
    assert s.api_token.get_secret_value() == SECRET_ENV["API_TOKEN"]
    assert s.reveal("sentry_dsn") == SECRET_ENV["SENTRY_DSN"]
    assert s.database_url == SECRET_ENV["DATABASE_URL"]  # the code that connects needs it whole
    assert "sk_test_keyCCC" not in s.model_dump_json()


def test_direct_construction_takes_plain_strings_for_secrets():
    s = Settings(api_token=TOKEN, stripe_webhook_secrets=("whsec_a", " whsec_b "), sentry_dsn="")

    assert s.api_token == SecretStr(TOKEN)
    assert s.reveal("stripe_webhook_secrets") == ("whsec_a", "whsec_b")
    assert s.sentry_dsn is None


def test_repr_of_unset_secrets_says_so():
    text = repr(Settings.from_env({}))

    assert "<set>" not in text
    assert "api_token=None" in text
    assert "stripe_webhook_secrets=()" in text


def test_require_returns_a_set_value():
    s = Settings.from_env({"API_TOKEN": TOKEN})

    assert s.require("api_token", "the admin API needs it") == TOKEN


@pytest.mark.parametrize(
    ("name", "var"),
    [
        ("api_token", "API_TOKEN"),
        ("database_url", "DATABASE_URL"),
        ("stripe_webhook_secrets", "STRIPE_WEBHOOK_SECRET"),
        ("stripe_api_key", "STRIPE_API_KEY"),
    ],
)
def test_require_unset_names_the_environment_variable_and_the_reason(name, var):
    s = Settings.from_env({})

    with pytest.raises(SettingsError) as excinfo:
        s.require(name, "reconciliation calls the Stripe API")

    message = str(excinfo.value)
    assert var in message
    assert "reconciliation calls the Stripe API" in message


def test_require_treats_empty_secret_list_as_unset():
    s = Settings.from_env({"STRIPE_WEBHOOK_SECRET": " , "})

    with pytest.raises(SettingsError, match="STRIPE_WEBHOOK_SECRET"):
        s.require("stripe_webhook_secrets", "the receiver verifies signatures")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:hunter2@h/db", "postgresql://u:***@h/db"),
        (
            "postgresql://u:hunter2@h:5432/db?sslmode=require",
            "postgresql://u:***@h:5432/db?sslmode=require",
        ),
        ("redis://:secret@localhost:6379/0", "redis://:***@localhost:6379/0"),
        ("postgresql://u:p@ss:w0rd@h/db", "postgresql://u:***@h/db"),  # '@' inside the password
        ("postgresql://u@h/db", "postgresql://u@h/db"),  # no password: unchanged
        ("postgresql://h/db", "postgresql://h/db"),
        ("rediss://default:secret@cache.example:6380/0", "rediss://default:***@cache.example:6380/0"),
        ("rediss://:secret@cache.example:6380/0?ssl_cert_reqs=required",
         "rediss://:***@cache.example:6380/0?ssl_cert_reqs=required"),
        # libpq takes the password as a query parameter too
        ("postgresql://u@h/db?sslmode=require&password=hunter2", "postgresql://u@h/db?sslmode=require&password=***"),
        ("https://api.example/v1?api_key=k3y&limit=5", "https://api.example/v1?api_key=***&limit=5"),
        ("https://o1.ingest.sentry.io/1?sentry_key=abc", "https://o1.ingest.sentry.io/1?sentry_key=***"),
        ("not a url", "not a url"),
        ("", ""),
    ],
)
def test_redact_url(url, expected):
    assert redact_url(url) == expected


def test_redact_url_never_keeps_the_password():
    redacted = redact_url("postgresql+psycopg://payhooks:s3cr3t-P4ss@db.internal:5432/payhooks")
    assert "s3cr3t-P4ss" not in redacted
    assert redacted.startswith("postgresql+psycopg://payhooks:")
    assert redacted.endswith("@db.internal:5432/payhooks")


# -- bearer tokens ------------------------------------------------------------------


@pytest.mark.parametrize("var", ["API_TOKEN", "METRICS_TOKEN"])
def test_a_short_bearer_token_is_refused_with_a_clear_message(var):
    with pytest.raises(SettingsError) as excinfo:
        Settings.from_env({var: "x" * (MIN_TOKEN_LENGTH - 1)})

    message = str(excinfo.value)
    assert var in message and str(MIN_TOKEN_LENGTH) in message
    assert "x" * (MIN_TOKEN_LENGTH - 1) not in message  # the refused value is not echoed


@pytest.mark.parametrize("var", ["API_TOKEN", "METRICS_TOKEN"])
def test_a_token_of_the_minimum_length_is_accepted(var):
    s = Settings.from_env({var: "x" * MIN_TOKEN_LENGTH})
    assert len(s.api_token or s.metrics_token) == MIN_TOKEN_LENGTH


def test_the_development_and_test_tokens_are_long_enough():
    from tests.conftest import API_TOKEN
    from workers.cli import DEV_API_TOKEN

    assert Settings.from_env({"API_TOKEN": DEV_API_TOKEN}).reveal("api_token") == DEV_API_TOKEN
    assert Settings.from_env({"API_TOKEN": API_TOKEN}).reveal("api_token") == API_TOKEN


# -- the web process ------------------------------------------------------------------


def test_web_settings_defaults_and_parsing():
    s = Settings.from_env({})
    assert (s.web_routes, s.web_host, s.web_worker_connections) == ("all", "0.0.0.0", 1000)
    assert (s.request_header_timeout_seconds, s.request_body_timeout_seconds) == (5, 10.0)
    assert s.api_max_bytes == 64 * 1024

    s = Settings.from_env({
        "WEB_ROUTES": " API ", "WEB_HOST": "127.0.0.1", "WEB_WORKER_CONNECTIONS": "50",
        "REQUEST_HEADER_TIMEOUT_SECONDS": "2", "REQUEST_BODY_TIMEOUT_SECONDS": "2.5", "API_MAX_BYTES": "1000",
    })
    assert (s.web_routes, s.web_host, s.web_worker_connections) == ("api", "127.0.0.1", 50)
    assert (s.request_header_timeout_seconds, s.request_body_timeout_seconds, s.api_max_bytes) == (2, 2.5, 1000)


@pytest.mark.parametrize(
    ("var", "raw"),
    [("WEB_ROUTES", "admin"), ("REQUEST_BODY_TIMEOUT_SECONDS", "0"), ("REQUEST_HEADER_TIMEOUT_SECONDS", "1.5"),
     ("API_MAX_BYTES", "-1")],
)
def test_web_settings_refuse_bad_values(var, raw):
    with pytest.raises(SettingsError, match=var):
        Settings.from_env({var: raw})


# -- replace: a copy validated like any other -----------------------------------------


def test_replace_changes_only_what_it_is_given():
    s = Settings.from_env({"API_TOKEN": TOKEN, "PORT": "9000"})

    changed = s.replace(redis_url="redis://h:1/0", webhook_max_bytes=1024)

    assert (changed.redis_url, changed.webhook_max_bytes, changed.port) == ("redis://h:1/0", 1024, 9000)
    assert changed.api_token == s.api_token
    assert s.redis_url is None  # the original is untouched
    assert s.replace() == s


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"port": 0}, "port=0 is invalid: must be a positive integer"),
        ({"web_routes": "admin"}, "web_routes='admin' is invalid: must be one of all, webhooks, api"),
        ({"broker_visibility_timeout": 100}, "RETRY_BACKOFF_MAX_SECONDS must stay below BROKER_VISIBILITY_TIMEOUT"),
        ({"api_token": "tiny5"}, "API_TOKEN must be at least 32 characters (it is 5)"),
        ({"prot": 1}, "prot"),
    ],
)
def test_replace_validates(changes, message):
    with pytest.raises(SettingsError) as excinfo:
        Settings().replace(**changes)

    assert message in str(excinfo.value)
    assert "tiny5" not in str(excinfo.value)


def test_a_bad_secret_is_refused_without_echoing_it():
    with pytest.raises(SettingsError) as excinfo:
        Settings(stripe_webhook_secrets=42)

    assert str(excinfo.value).startswith("stripe_webhook_secrets is invalid:")
    assert "42" not in str(excinfo.value)


# -- every message a user saw before pydantic-settings, word for word -----------------

ENVIRONMENT_MESSAGES = [
    ({"PORT": "abc"}, "PORT='abc' is invalid: invalid literal for int() with base 10: 'abc'"),
    ({"PORT": "0"}, "PORT='0' is invalid: must be a positive integer"),
    ({"WEB_CONCURRENCY": "1.5"}, "WEB_CONCURRENCY='1.5' is invalid: invalid literal for int() with base 10: '1.5'"),
    ({"PUBLISH_TIMEOUT_SECONDS": "nan"}, "PUBLISH_TIMEOUT_SECONDS='nan' is invalid: must be a positive number"),
    ({"RETRY_BACKOFF_BASE_SECONDS": "-1"}, "RETRY_BACKOFF_BASE_SECONDS='-1' is invalid: must be a positive number"),
    ({"LOG_LEVEL": "loud"}, "LOG_LEVEL='loud' is invalid: must be DEBUG, INFO, WARNING, ERROR or CRITICAL"),
    ({"LOG_FORMAT": "xml"}, "LOG_FORMAT='xml' is invalid: must be json or text"),
    ({"WEB_ROUTES": "admin"}, "WEB_ROUTES='admin' is invalid: must be one of all, webhooks, api"),
    ({"CLAWBACK_POLICY": "zz"}, "CLAWBACK_POLICY='zz' is invalid: must be one of ['allow_negative', 'floor_at_zero']"),
    ({"FRAUD_POLICY": "block"}, "FRAUD_POLICY='block' is invalid: must be one of ['off', 'freeze']"),
    ({"ZERO_AMOUNT_INVOICES": "always"}, "ZERO_AMOUNT_INVOICES='always' is invalid: must be one of ['skip', 'grant']"),
    ({"API_TOKEN": "x" * 31}, "API_TOKEN must be at least 32 characters (it is 31): a short bearer token can be "
     "guessed; generate one with `openssl rand -hex 32`"),
    ({"METRICS_TOKEN": "y" * 5}, "METRICS_TOKEN must be at least 32 characters (it is 5): a short bearer token can be "
     "guessed; generate one with `openssl rand -hex 32`"),
    ({"RETENTION_INBOX_DAYS": "30"}, "RETENTION_INBOX_DAYS must be at least 35: providers redeliver for days and list "
     "events for 30, and an inbox id pruned earlier would let a late copy be applied twice"),
    ({"CONSUMER_HEARTBEAT_SECONDS": "6", "CONSUMER_DEAD_AFTER_SECONDS": "10"}, "CONSUMER_DEAD_AFTER_SECONDS must be "
     "at least twice CONSUMER_HEARTBEAT_SECONDS, or a live consumer that misses one beat is taken for dead"),
    ({"BROKER_VISIBILITY_TIMEOUT": "120"}, "RETRY_BACKOFF_MAX_SECONDS must stay below BROKER_VISIBILITY_TIMEOUT "
     "(300.0 >= 120), or Redis redelivers a waiting retry"),
]
FILE_MESSAGES = [
    ("publish_attempts: 0\n", "{path}:publish_attempts=0 is invalid: must be a positive integer"),
    ("port: 1.9\n", "{path}:port=1.9 is invalid: must be a whole number"),
    ("web_concurrency: true\n", "{path}:web_concurrency=True is invalid: must be a whole number"),
    ("- port\n", "PAYHOOKS_CONFIG: {path} must hold a mapping of settings"),
    ("credit_catalog: [a]\n", "{path}:credit_catalog=['a'] is invalid: must map price ids to credits per unit"),
    ("credit_catalog:\n  p:\n", "{path}:credit_catalog={'p': None} is invalid: int() argument must be a string, "
     "a bytes-like object or a real number, not 'NoneType'"),
    ("subscription_plans: [a]\n", "{path}:subscription_plans=['a'] is invalid: must map price ids to credits per period"),
    ("subscription_plans:\n  p:\n    credits: 5\n    extra: 1\n", "{path}:subscription_plans={'p': {'credits': 5, "
     "'extra': 1}} is invalid: plan 'p' takes credits and/or zero_amount_invoices"),
    ("subscription_plans:\n  p:\n    zero_amount_invoices: often\n", "{path}:subscription_plans={'p': "
     "{'zero_amount_invoices': 'often'}} is invalid: must be one of ['skip', 'grant']"),
    ("credit_packages: [a]\n", "{path}:credit_packages=['a'] is invalid: must map package ids to "
     "{name, credits, amount_cents, currency}"),
    ("credit_packages:\n  s: 1\n", "{path}:credit_packages={'s': 1} is invalid: package 's' must be a mapping"),
    ("credit_packages:\n  s: {name: S}\n", "{path}:credit_packages={'s': {'name': 'S'}} is invalid: package 's' "
     "lacks credits"),
    ("credit_packages:\n  s: {credits: 0, amount_cents: 5}\n", "{path}:credit_packages={'s': {'credits': 0, "
     "'amount_cents': 5}} is invalid: package 's': must be a positive integer"),
]


@pytest.mark.parametrize(("env", "message"), ENVIRONMENT_MESSAGES, ids=lambda v: str(v)[:40])
def test_environment_messages_are_unchanged(env, message):
    with pytest.raises(SettingsError) as excinfo:
        Settings.from_env(env)

    assert str(excinfo.value) == message


@pytest.mark.parametrize(("text", "message"), FILE_MESSAGES, ids=lambda v: str(v)[:40])
def test_config_file_messages_are_unchanged(tmp_path, text, message):
    env = _config(tmp_path, text)

    with pytest.raises(SettingsError) as excinfo:
        Settings.from_env(env)

    assert str(excinfo.value) == message.replace("{path}", env["PAYHOOKS_CONFIG"])


def test_unreadable_config_file_messages_are_unchanged(tmp_path):
    missing, binary = tmp_path / "nope.yaml", tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00port: 1\n")

    def message(path) -> str:
        with pytest.raises(SettingsError) as excinfo:
            Settings.from_env({"PAYHOOKS_CONFIG": str(path)})
        return str(excinfo.value)

    assert message(missing) == f"PAYHOOKS_CONFIG: cannot read {missing}: No such file or directory"
    assert message(tmp_path) == f"PAYHOOKS_CONFIG: cannot read {tmp_path}: Is a directory"
    assert message(binary) == f"PAYHOOKS_CONFIG: {binary} is not UTF-8 text"
    assert message(Path(_config(tmp_path, "port: [1\n")["PAYHOOKS_CONFIG"])).startswith(
        f"PAYHOOKS_CONFIG: {tmp_path / 'payhooks.yaml'} is not valid YAML: "
    )


def test_require_message_is_unchanged():
    with pytest.raises(SettingsError) as excinfo:
        Settings().require("stripe_api_key", "reconciliation calls the Stripe API")

    assert str(excinfo.value) == "STRIPE_API_KEY is not set; reconciliation calls the Stripe API"


# -- one declaration per setting, and the README table agrees with it -------------------


def test_every_setting_is_documented_where_it_is_declared():
    for name, field in Settings.model_fields.items():
        assert field.description, name


def _readme_settings_rows() -> list[tuple[list[str], str]]:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    rows = []
    for line in readme.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`") and re.fullmatch(r"[`A-Z0-9_*, ]+", cells[0]):
            rows.append((re.findall(r"`([A-Z0-9_*]+)`", cells[0]), cells[2]))
    return rows


def test_readme_settings_table_names_every_variable_and_only_real_ones():
    rows = _readme_settings_rows()
    named = [var for variables, _ in rows for var in variables]
    wildcards = [var[:-1] for var in named if var.endswith("*")]

    for var in ENVIRONMENT:
        assert var in named or any(var.startswith(prefix) for prefix in wildcards), f"{var} is not in the README"
    for var in named:
        if not var.endswith("*"):
            assert var in ENVIRONMENT, f"the README documents {var}, which nothing reads"


def test_readme_defaults_match_the_declared_ones():
    checked = 0
    for variables, defaults in _readme_settings_rows():
        values = [value.split(" ")[0] for value in defaults.split(", ")]
        if len(values) != len(variables):
            continue
        for var, shown in zip(variables, values, strict=True):
            if var not in ENVIRONMENT:
                continue
            default = Settings.model_fields[ENVIRONMENT[var]].default
            if isinstance(default, (int, float)) and re.fullmatch(r"[0-9.]+", shown):
                assert float(shown) == default, var
                checked += 1
            elif isinstance(default, str) and default:
                assert shown == default, var
                checked += 1
    assert checked >= 20


# -- PayPal -------------------------------------------------------------------


def test_paypal_is_off_until_a_webhook_id_is_set():
    s = Settings.from_env({})
    assert not s.paypal_enabled
    assert (s.paypal_environment, s.paypal_verification) == ("live", "offline")
    assert s.paypal_api_url == "https://api-m.paypal.com"


def test_paypal_settings_are_parsed():
    s = Settings.from_env({
        "PAYPAL_WEBHOOK_ID": " 8PT597110X687430L , 1JE4291016473214C ",
        "PAYPAL_CLIENT_ID": "client",
        "PAYPAL_CLIENT_SECRET": "secret",
        "PAYPAL_ENVIRONMENT": "Sandbox",
        "PAYPAL_VERIFICATION": "online",
    })
    assert s.paypal_enabled
    assert s.paypal_webhook_ids == ("8PT597110X687430L", "1JE4291016473214C")
    assert s.paypal_api_url == "https://api-m.sandbox.paypal.com"
    assert s.replace(paypal_api_base="http://127.0.0.1:9").paypal_api_url == "http://127.0.0.1:9"


def test_paypal_webhook_ids_may_be_a_yaml_list(tmp_path):
    s = Settings.from_env(_config(tmp_path, "paypal_webhook_ids: [A1, B2]\npaypal_environment: sandbox\n"))
    assert s.paypal_webhook_ids == ("A1", "B2")


@pytest.mark.parametrize(("var", "raw"), [("PAYPAL_ENVIRONMENT", "prod"), ("PAYPAL_VERIFICATION", "none")])
def test_unknown_paypal_choice_names_the_variable(var, raw):
    with pytest.raises(SettingsError, match=var):
        Settings.from_env({var: raw})


def test_online_verification_needs_credentials():
    with pytest.raises(SettingsError, match="PAYPAL_CLIENT_ID"):
        Settings.from_env({"PAYPAL_WEBHOOK_ID": "W1", "PAYPAL_VERIFICATION": "online"})


def test_paypal_client_secret_may_not_come_from_the_config_file(tmp_path):
    with pytest.raises(SettingsError, match="paypal_client_secret"):
        Settings.from_env(_config(tmp_path, "paypal_client_secret: nope\n"))
