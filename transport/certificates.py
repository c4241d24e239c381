"""PayPal's signing certificates, shared through Redis by every receiver process.

A ``providers.paypal.CertificateStore``: the first process to meet a certificate
downloads and checks it, the others read it from here (and check it again);
each keeps it in process afterwards. Redis out of reach is a cache miss, not
an error: the certificate is downloaded instead.
"""

from __future__ import annotations

import redis


class RedisCertificateStore:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def get(self, key: str) -> bytes | None:
        try:
            return self._client.get(key)
        except redis.RedisError:
            return None

    def set(self, key: str, value: bytes, ttl: int) -> None:
        try:
            self._client.set(key, value, ex=ttl)
        except redis.RedisError:
            pass
