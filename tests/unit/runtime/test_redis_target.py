"""Where Redis is: the CAIRN_REDIS_* settings, their errors, and the client each mode builds."""

from __future__ import annotations

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import SentinelConnectionPool, SentinelManagedSSLConnection

from cairn.runtime.redis import Redis, RedisTarget, connect, url_with_credentials
from cairn.runtime.settings import Settings


def test_one_server_by_url_is_the_default_mode() -> None:
    target = RedisTarget.from_env({"CAIRN_REDIS_URL": "redis://:pw@db:6379/2"})
    assert target.mode == "standalone" and target
    assert target.describe() == "redis://db:6379/2"
    assert not RedisTarget.from_env({})
    assert Settings.from_env({"CAIRN_REDIS_URL": "redis://db:6379/0"}).redis_url == \
        "redis://db:6379/0"


def test_sentinel_settings() -> None:
    target = RedisTarget.from_env({
        "CAIRN_REDIS_SENTINELS": "s1:26379, s2:26379,[::1]:26380",
        "CAIRN_REDIS_SENTINEL_MASTER": "cairn", "CAIRN_REDIS_SENTINEL_PASSWORD": "sp",
        "CAIRN_REDIS_PASSWORD": "p", "CAIRN_REDIS_DB": "3", "CAIRN_REDIS_TLS": "true",
        "CAIRN_REDIS_TLS_CA_FILE": "/etc/ca.pem", "CAIRN_REDIS_REPLICA_ACKS": "1",
    })
    assert target.mode == "sentinel"
    assert target.sentinels == (("s1", 26379), ("s2", 26379), ("::1", 26380))
    assert target.describe() == "sentinel cairn via s1:26379,s2:26379,::1:26380"
    assert target.tls_options() == {"ssl_cert_reqs": "required", "ssl_ca_certs": "/etc/ca.pem"}
    assert target.replica_acks == 1 and target.db == 3
    client = connect(target)
    assert isinstance(client, Redis) and client.replica_acks == 1
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "cairn"
    assert pool.connection_kwargs["password"] == "p"
    assert pool.connection_kwargs["ssl_ca_certs"] == "/etc/ca.pem"
    assert pool.connection_class is SentinelManagedSSLConnection
    sentinel = pool.sentinel_manager.sentinels[0].connection_pool.connection_kwargs
    assert sentinel["password"] == "sp" and sentinel["ssl_ca_certs"] == "/etc/ca.pem"


def test_cluster_settings() -> None:
    target = RedisTarget.from_env({"CAIRN_REDIS_CLUSTER_NODES": "n1:7000,n2:7001",
                                   "CAIRN_REDIS_PASSWORD": "p", "CAIRN_REDIS_TLS": "1"})
    assert target.mode == "cluster" and target.describe() == "cluster via n1:7000,n2:7001"
    client = connect(target)
    assert isinstance(client, RedisCluster)
    assert client.connection_kwargs["password"] == "p"
    assert client.connection_kwargs["connection_class"].__name__ == "SSLConnection"


def test_credentials_given_apart_from_the_url_replace_its_own() -> None:
    assert url_with_credentials("redis://db:6379/0", "", "p@ss:w/rd") == \
        "redis://:p%40ss%3Aw%2Frd@db:6379/0"
    assert url_with_credentials("rediss://u:old@db:6380/1?ssl_ca_certs=/ca", "", "new") == \
        "rediss://u:new@db:6380/1?ssl_ca_certs=/ca"
    client = connect(RedisTarget(url="redis://db:6379/0", password="p@ss"))
    assert client.connection_pool.connection_kwargs["password"] == "p@ss"


@pytest.mark.parametrize(("env", "message"), [
    ({"CAIRN_REDIS_URL": "redis://a", "CAIRN_REDIS_SENTINELS": "s:1"}, "only one of"),
    ({"CAIRN_REDIS_SENTINELS": "s1"}, "CAIRN_REDIS_SENTINELS must be host:port"),
    ({"CAIRN_REDIS_CLUSTER_NODES": "n:x"}, "CAIRN_REDIS_CLUSTER_NODES must be host:port"),
    ({"CAIRN_REDIS_CLUSTER_NODES": "n:1", "CAIRN_REDIS_DB": "2"}, "only database 0"),
    ({"CAIRN_REDIS_URL": "http://db"}, "redis://, rediss:// or unix://"),
    ({"CAIRN_REDIS_TLS": "maybe"}, "CAIRN_REDIS_TLS must be true or false"),
    ({"CAIRN_REDIS_REPLICA_ACKS": "-1"}, "CAIRN_REDIS_REPLICA_ACKS must not be negative"),
    ({"CAIRN_REDIS_TLS_CERT_FILE": "/c.pem"}, "CAIRN_REDIS_TLS_KEY_FILE"),
])
def test_bad_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RedisTarget.from_env(env)


def test_a_service_needs_some_redis() -> None:
    with pytest.raises(SystemExit, match=r"CAIRN_REDIS_URL \(or CAIRN_REDIS_SENTINELS"):
        Settings.from_env({}).require("redis")
    Settings.from_env({"CAIRN_REDIS_CLUSTER_NODES": "n:1"}).require("redis")
