"""Where the Redis broker is: one URL resolved from a flag, the environment or MSight's variables.

Order (first that is set wins): the ``--redis-url`` flag / ``[redis] url`` config key, ``MSIGHT_REDIS_URL``,
MSight's ``MSIGHT_REDIS_MESSAGE_BROKER_*`` variables, then ``redis://localhost:6379/0``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

import redis

from msightd.logs import redact_url

URL_ENV = "MSIGHT_REDIS_URL"
_MSIGHT_PREFIX = "MSIGHT_REDIS_MESSAGE_BROKER_"
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class RedisSettings:
    """A broker address plus optional TLS files (for ``rediss://`` URLs)."""

    url: str
    tls_ca_cert_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None

    def describe(self) -> str:
        """The URL without its password, for logs and error messages."""
        return redact_url(self.url)

    def client(self, **options: object) -> redis.Redis:
        """A new client. Callers own it and must close it."""
        tls: dict[str, object] = {}
        if self.url.startswith("rediss://"):
            tls = {
                "ssl_ca_certs": self.tls_ca_cert_file,
                "ssl_certfile": self.tls_cert_file,
                "ssl_keyfile": self.tls_key_file,
            }
            tls = {k: v for k, v in tls.items() if v}
        return redis.Redis.from_url(self.url, **tls, **options)


def resolve_redis_settings(url: str | None = None, environ: Mapping[str, str] | None = None) -> RedisSettings:
    env = os.environ if environ is None else environ
    tls_files = {
        "tls_ca_cert_file": env.get(_MSIGHT_PREFIX + "TLS_CA_CERT_FILE") or None,
        "tls_cert_file": env.get(_MSIGHT_PREFIX + "TLS_CERT_FILE") or None,
        "tls_key_file": env.get(_MSIGHT_PREFIX + "TLS_KEY_FILE") or None,
    }
    chosen = url or env.get(URL_ENV) or _url_from_msight_env(env) or "redis://localhost:6379/0"
    return RedisSettings(url=chosen, **tls_files)


def _url_from_msight_env(env: Mapping[str, str]) -> str | None:
    keys = ("HOST", "PORT", "DB", "USERNAME", "PASSWORD", "USE_TLS", "UNIX_SOCKET_PATH")
    values = {k: env.get(_MSIGHT_PREFIX + k, "") for k in keys}
    if not any(values.values()):
        return None
    db = values["DB"] or "0"
    credentials = ""
    if values["USERNAME"] or values["PASSWORD"]:
        credentials = f"{quote(values['USERNAME'], safe='')}:{quote(values['PASSWORD'], safe='')}@"
    if values["UNIX_SOCKET_PATH"]:
        return f"unix://{credentials}{values['UNIX_SOCKET_PATH']}?db={db}"
    scheme = "rediss" if values["USE_TLS"].lower() in _TRUE else "redis"
    host = values["HOST"] or "localhost"
    port = values["PORT"] or "6379"
    return f"{scheme}://{credentials}{host}:{port}/{db}"
