"""``payhooks stripe setup``: point a Stripe webhook endpoint at payhooks, with the right events.

One endpoint per URL, subscribed to exactly the event types payhooks handles
(``providers.stripe.HANDLED_TYPES``) and pinned to the API version payhooks is
tested with (``providers.stripe.API_VERSION``), so the events it receives have
the shape its handlers read.

The plan is computed first (``plan``) and only then carried out (``apply``), so
``--dry-run`` shows exactly what would change. What Stripe does not allow shapes
the plan: an endpoint's API version is fixed when it is created and its signing
secret is shown only by the create call, so a version mismatch or a lost secret
is fixed by creating a new endpoint (``recreate``) — optionally keeping the old
one until the receiver accepts the new secret (both deliver meanwhile; payhooks'
inbox drops the duplicates).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from providers.stripe_api import StripeAPI

DESCRIPTION = "payhooks"


@dataclass(frozen=True)
class Step:
    """One change to make at Stripe."""

    action: str  # create | update | delete
    endpoint_id: str | None = None
    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    enable: bool = False


@dataclass(frozen=True)
class Plan:
    url: str
    events: tuple[str, ...]
    api_version: str
    existing: tuple[dict, ...]  # endpoints already pointing at the URL
    steps: tuple[Step, ...]
    warnings: tuple[str, ...] = ()

    @property
    def changes(self) -> bool:
        return bool(self.steps)


@dataclass
class Result:
    created: list[dict] = field(default_factory=list)  # with their secrets
    updated: list[dict] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


def check_url(url: str) -> list[str]:
    """Refuse what cannot be an endpoint URL; return warnings for what is merely unusual."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL")
    warnings = []
    if parts.scheme != "https":
        warnings.append("Stripe requires HTTPS for live-mode webhook endpoints")
    if not parts.path.rstrip("/").endswith("/webhooks/stripe"):
        warnings.append(
            "payhooks receives Stripe events at /webhooks/stripe; this URL has another path"
        )
    return warnings


def _same_url(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def plan(
    endpoints: Sequence[dict],
    url: str,
    events: Sequence[str],
    api_version: str,
    *,
    recreate: bool = False,
    keep_old: bool = False,
) -> Plan:
    """What to change so that one enabled endpoint for ``url`` has these events and version."""
    warnings = check_url(url)
    wanted = tuple(dict.fromkeys(events))
    existing = tuple(e for e in endpoints if _same_url(e.get("url", ""), url))
    if not existing or recreate:
        steps = [Step("create")]
        if not keep_old:
            steps += [Step("delete", e["id"]) for e in existing]
        return Plan(url, wanted, api_version, existing, tuple(steps), tuple(warnings))

    steps = []
    for endpoint in existing:
        current = list(endpoint.get("enabled_events") or [])
        add = tuple(e for e in wanted if e not in current)
        remove = tuple(
            e for e in current if e not in wanted
        )  # includes "*": everything is too much
        enable = endpoint.get("status") == "disabled"
        if add or remove or enable:
            steps.append(Step("update", endpoint["id"], add, remove, enable))
        if endpoint.get("api_version") != api_version:
            rendered = endpoint.get("api_version") or "the account's default API version"
            warnings.append(
                f"{endpoint['id']} renders events in {rendered}, "
                f"payhooks is tested with {api_version}; "
                "Stripe cannot change an endpoint's API version: run again with --recreate"
            )
    if len(existing) > 1:
        warnings.append(
            f"{len(existing)} endpoints point at this URL "
            f"({', '.join(e['id'] for e in existing)}): every event "
            "is delivered once per endpoint (payhooks drops the duplicates); --recreate leaves one"
        )
    return Plan(url, wanted, api_version, existing, tuple(steps), tuple(warnings))


def apply(api: StripeAPI, the_plan: Plan, *, description: str = DESCRIPTION) -> Result:
    """Carry out a plan: creations first, so a failure never leaves the URL without an endpoint."""
    result = Result()
    order = {"create": 0, "update": 1, "delete": 2}
    for step in sorted(the_plan.steps, key=lambda s: order[s.action]):
        if step.action == "create":
            result.created.append(
                api.create_webhook_endpoint(
                    url=the_plan.url,
                    enabled_events=the_plan.events,
                    api_version=the_plan.api_version,
                    description=description,
                )
            )
        elif step.action == "update":
            result.updated.append(
                api.update_webhook_endpoint(
                    step.endpoint_id,
                    enabled_events=the_plan.events if step.add or step.remove else None,
                    disabled=False if step.enable else None,
                )
            )
        else:
            api.delete_webhook_endpoint(step.endpoint_id)
            result.deleted.append(step.endpoint_id)
    return result
