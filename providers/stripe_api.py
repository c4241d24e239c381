"""Calls to Stripe's API, from one place that builds the client.

``StripeClient`` makes no network retries unless asked, so it is built with
``max_network_retries`` (Stripe's idempotency keys make its retries of POSTs
safe) and a bounded timeout. ``STRIPE_API_BASE`` points it elsewhere (tests
use a local fake). Since stripe-python 15 its objects are not dicts: every
result leaves this module as a plain, JSON-ready dict via ``to_dict(for_json=True)``.

Errors say what kind they are: ``ProviderUnavailableError`` (network trouble,
5xx, rate limiting: try again later) or ``ProviderRequestError`` (Stripe
refused the request: trying again will not help), of which
``ProviderNotFoundError`` is the 404 (no such session) and
``ProviderConflictError`` an idempotency key reused with other parameters.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import stripe

from providers.errors import (  # noqa: F401  (callers catch them from here too)
    ProviderConflictError,
    ProviderNotFoundError,
    ProviderRequestError,
    ProviderUnavailableError,
)
from providers.stripe import API_VERSION

MAX_TYPES_PER_LISTING = 20
__all__ = ["ProviderRequestError", "ProviderUnavailableError", "StripeAPI", "StripeNotConfiguredError"]


class StripeNotConfiguredError(RuntimeError):
    """No API key: features that call Stripe say so instead of failing obscurely."""


class StripeAPI:
    def __init__(
        self,
        api_key: str | None,
        api_base: str | None = None,
        *,
        max_network_retries: int = 2,
        timeout_seconds: float = 10.0,
    ) -> None:
        if not api_key:
            raise StripeNotConfiguredError(
                "STRIPE_API_KEY is not set: creating checkouts, verifying payments, "
                "sweeping pending sessions and reconciling events need it"
            )
        self._client = stripe.StripeClient(
            api_key,
            # Objects read from the API in the same shape as the webhooks of an endpoint pinned by `stripe setup`.
            stripe_version=API_VERSION,
            base_addresses={"api": api_base} if api_base else None,
            max_network_retries=max_network_retries,
            http_client=stripe.new_default_http_client(timeout=timeout_seconds),
        )

    def create_checkout_session(self, params: dict, *, idempotency_key: str) -> dict:
        return self._call(
            lambda: self._client.v1.checkout.sessions.create(
                params=params, options={"idempotency_key": idempotency_key}
            )
        )

    def retrieve_checkout_session(self, session_id: str) -> dict:
        return self._call(lambda: self._client.v1.checkout.sessions.retrieve(session_id))

    def list_events(self, *, created_gte: int, types: Sequence[str], page_size: int = 100) -> Iterator[dict]:
        """Every event created at or after ``created_gte`` of the given types (newest first per group of types)."""
        # Stripe takes at most 20 types per listing: ask for them in groups.
        for start in range(0, len(types), MAX_TYPES_PER_LISTING):
            group = list(types[start : start + MAX_TYPES_PER_LISTING])
            yield from self._all(
                lambda group=group: self._client.v1.events.list(
                    params={"created": {"gte": created_gte}, "types": group, "limit": page_size}
                )
            )

    def list_line_items(self, session_id: str, *, page_size: int = 100) -> list[dict]:
        """Every line item of a Checkout Session, each ``price.product`` expanded.

        Sessions made by Payment Links, Pricing Tables or the Dashboard carry no
        metadata of ours; what was bought (price, product, quantity) is only here.
        """
        return list(
            self._all(
                lambda: self._client.v1.checkout.sessions.line_items.list(
                    session_id, params={"limit": page_size, "expand": ["data.price.product"]}
                )
            )
        )

    # -- webhook endpoints (payhooks stripe setup) ---------------------------------

    def list_webhook_endpoints(self, *, page_size: int = 100) -> list[dict]:
        """Every webhook endpoint of the account, newest first, without secrets.

        Stripe shows an endpoint's secret only when it creates it.
        """
        return list(
            self._all(lambda: self._client.v1.webhook_endpoints.list(params={"limit": page_size}))
        )

    def create_webhook_endpoint(
        self,
        *,
        url: str,
        enabled_events: Sequence[str],
        api_version: str,
        description: str | None = None,
    ) -> dict:
        """Create an endpoint; the result's ``secret`` is the only time Stripe reveals it."""
        params: dict = {
            "url": url,
            "enabled_events": list(enabled_events),
            "api_version": api_version,
        }
        if description:
            params["description"] = description
        return self._call(lambda: self._client.v1.webhook_endpoints.create(params=params))

    def update_webhook_endpoint(
        self,
        endpoint_id: str,
        *,
        url: str | None = None,
        enabled_events: Sequence[str] | None = None,
        disabled: bool | None = None,
        description: str | None = None,
    ) -> dict:
        """Change an endpoint's url, events or status; its API version cannot be changed."""
        params: dict = {}
        if url is not None:
            params["url"] = url
        if enabled_events is not None:
            params["enabled_events"] = list(enabled_events)
        if disabled is not None:
            params["disabled"] = disabled
        if description is not None:
            params["description"] = description
        return self._call(
            lambda: self._client.v1.webhook_endpoints.update(endpoint_id, params=params)
        )

    def delete_webhook_endpoint(self, endpoint_id: str) -> dict:
        return self._call(lambda: self._client.v1.webhook_endpoints.delete(endpoint_id))

    def _all(self, first_page) -> Iterator[dict]:
        """Every object of a list, page after page, as plain dicts; errors classified."""
        pages = self._call(first_page, as_dict=False).auto_paging_iter()
        while True:
            obj = self._call(lambda: next(pages, None), as_dict=False)
            if obj is None:
                return
            yield obj.to_dict(for_json=True)

    @staticmethod
    def _call(request, *, as_dict: bool = True):
        try:
            result = request()
        except (stripe.APIConnectionError, stripe.RateLimitError) as exc:
            raise ProviderUnavailableError(f"Stripe unavailable: {exc.user_message or exc}") from exc
        except stripe.IdempotencyError as exc:
            raise ProviderConflictError(f"Stripe refused a reused idempotency key: {exc.user_message or exc}") from exc
        except stripe.StripeError as exc:
            status = exc.http_status or 0
            if status >= 500 or status == 0:
                raise ProviderUnavailableError(f"Stripe answered {status or 'nothing'}: {exc.user_message or exc}") from exc
            if status == 404:
                raise ProviderNotFoundError(f"Stripe has no such object: {exc.user_message or exc}") from exc
            raise ProviderRequestError(f"Stripe refused the request ({status}): {exc.user_message or exc}") from exc
        # for_json: decimal-string fields (fx_rate, unit_amount_decimal) come back as
        # strings, as Stripe sent them, not Decimals that json.dumps cannot encode.
        return result.to_dict(for_json=True) if as_dict and result is not None else result
