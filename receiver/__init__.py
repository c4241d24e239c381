"""The Flask receiver: verify and enqueue webhooks, answer the JSON API.

``create_app(settings)`` is the only place the app is assembled. The webhook
path touches Redis and never the database; the API reads the database.
``WEB_ROUTES`` picks what one process serves: everything (the Procfile's
``web``), or only webhooks or only ``/api`` where a platform routes them to
processes of their own. Health and metrics are served in every case.
"""

from __future__ import annotations

from flask import Flask

from infra.settings import Settings
from receiver import bodies
from receiver.errors import register_error_handlers
from receiver.services import Services


def create_app(settings: Settings, services: Services | None = None) -> Flask:
    from receiver import api, health, webhooks

    app = Flask("payhooks", static_folder=None)
    # Werkzeug answers 413 before reading more than this, chunked bodies included;
    # /api lowers it per request (receiver/bodies.py).
    app.config["MAX_CONTENT_LENGTH"] = max(settings.webhook_max_bytes, settings.api_max_bytes)
    services = services or Services(settings)
    app.extensions["payhooks"] = services
    register_error_handlers(app)
    bodies.register(app, settings)
    if settings.web_routes in ("all", "webhooks"):
        # Deliveries are answered in front of Flask (receiver/webhooks.py says why).
        app.wsgi_app = webhooks.WebhookEndpoints(services, app.wsgi_app)
    app.register_blueprint(health.blueprint)
    if settings.web_routes in ("all", "api"):
        app.register_blueprint(api.blueprint, url_prefix="/api")
    return app
