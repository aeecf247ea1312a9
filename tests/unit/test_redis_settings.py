from __future__ import annotations

from msightd.bus.connection import resolve_redis_settings


def test_flag_wins_over_environment() -> None:
    env = {"MSIGHT_REDIS_URL": "redis://env:1/0", "MSIGHT_REDIS_MESSAGE_BROKER_HOST": "other"}
    assert resolve_redis_settings("redis://flag:2/0", env).url == "redis://flag:2/0"


def test_msightd_url_variable_wins_over_msight_variables() -> None:
    env = {"MSIGHT_REDIS_URL": "redis://env:1/0", "MSIGHT_REDIS_MESSAGE_BROKER_HOST": "other"}
    assert resolve_redis_settings(None, env).url == "redis://env:1/0"


def test_msight_variables_build_a_url() -> None:
    env = {
        "MSIGHT_REDIS_MESSAGE_BROKER_HOST": "broker",
        "MSIGHT_REDIS_MESSAGE_BROKER_PORT": "6380",
        "MSIGHT_REDIS_MESSAGE_BROKER_DB": "2",
        "MSIGHT_REDIS_MESSAGE_BROKER_USERNAME": "u",
        "MSIGHT_REDIS_MESSAGE_BROKER_PASSWORD": "p@ss",
        "MSIGHT_REDIS_MESSAGE_BROKER_USE_TLS": "true",
        "MSIGHT_REDIS_MESSAGE_BROKER_TLS_CA_CERT_FILE": "/ca.pem",
    }
    settings = resolve_redis_settings(None, env)
    assert settings.url == "rediss://u:p%40ss@broker:6380/2"
    assert settings.tls_ca_cert_file == "/ca.pem"
    assert "p%40ss" not in settings.describe()


def test_unix_socket_variable() -> None:
    env = {"MSIGHT_REDIS_MESSAGE_BROKER_UNIX_SOCKET_PATH": "/run/redis.sock"}
    assert resolve_redis_settings(None, env).url == "unix:///run/redis.sock?db=0"


def test_default_is_localhost() -> None:
    assert resolve_redis_settings(None, {}).url == "redis://localhost:6379/0"
