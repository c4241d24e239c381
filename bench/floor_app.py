"""The receiver's floor: the least a webhook endpoint can do and still be correct.

Verify the Stripe signature (HMAC-SHA256 over ``"<t>.<body>"``, constant-time
compare, timestamp within tolerance) and LPUSH the raw body to a Redis list,
answer 200 JSON. No event parsing, no Celery message. Served by gunicorn with
the receiver's worker count and class; see bench/receiver.py.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time

import redis
from flask import Flask, request

SECRET = os.environ["STRIPE_WEBHOOK_SECRET"].split(",")[0].encode()
QUEUE = os.environ.get("FLOOR_QUEUE", "floor")
TOLERANCE = 300

client = redis.Redis.from_url(os.environ["REDIS_URL"])  # connects lazily, after the fork
app = Flask("floor")


@app.post("/webhooks/stripe")
def stripe_webhook():
    body = request.get_data()
    timestamp, signature = "", ""
    for item in request.headers.get("Stripe-Signature", "").split(","):
        key, _, value = item.partition("=")
        if key == "t":
            timestamp = value
        elif key == "v1":
            signature = value
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > TOLERANCE:
        return {"error": "invalid_signature"}, 400
    expected = hmac.new(SECRET, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        return {"error": "invalid_signature"}, 400
    client.lpush(QUEUE, body)
    return {"received": True}


@app.get("/healthz")
def healthz():
    return {"status": "ok"}
