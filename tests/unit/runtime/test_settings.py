"""Settings come from the environment, with documented defaults and clear failures."""

import pytest

from cairn.runtime.settings import Settings


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s.http_port == 8080
    assert s.grpc_port("project") == 20051
    assert s.address("auth") == "127.0.0.1:20053"


def test_overrides_and_explicit_addresses() -> None:
    s = Settings.from_env(
        {"CAIRN_HTTP_PORT": "9000", "CAIRN_LEDGER_GRPC_PORT": "7000", "CAIRN_AUTH_ADDR": "auth:1"}
    )
    assert (s.http_port, s.grpc_port("ledger"), s.address("auth")) == (9000, 7000, "auth:1")


def test_bad_integer_names_the_variable() -> None:
    with pytest.raises(ValueError, match="CAIRN_HTTP_PORT"):
        Settings.from_env({"CAIRN_HTTP_PORT": "eighty"})


def test_require_names_missing_variables() -> None:
    with pytest.raises(SystemExit, match="CAIRN_REDIS_URL"):
        Settings.from_env({}).require("redis_url")


def test_every_service_address_can_be_overridden() -> None:
    s = Settings.from_env({"CAIRN_COMPONENT_ADDR": "component:5", "CAIRN_LEDGER_ADDR": "ledger:6"})
    assert (s.address("component"), s.address("ledger")) == ("component:5", "ledger:6")
    assert s.address("project") == "127.0.0.1:20051"


def test_event_loop_is_uvloop_unless_asyncio_is_chosen() -> None:
    assert Settings.from_env({}).event_loop == "uvloop"
    assert Settings.from_env({"CAIRN_EVENT_LOOP": "AsyncIO"}).event_loop == "asyncio"
    with pytest.raises(ValueError, match="CAIRN_EVENT_LOOP"):
        Settings.from_env({"CAIRN_EVENT_LOOP": "trio"})
def test_observability_defaults_and_overrides() -> None:
    s = Settings.from_env({})
    assert s.metrics_enabled and s.metrics_port("ledger") == 20154 and s.envoy_stats_port == 9902
    # Derived from the gRPC and admin ports: replicas and stacks side by side never collide.
    moved = Settings.from_env({"CAIRN_LEDGER_GRPC_PORT": "6000", "CAIRN_ENVOY_ADMIN_PORT": "7000"})
    assert (moved.metrics_port("ledger"), moved.envoy_stats_port) == (6100, 7001)
    assert (s.otlp_endpoint, s.trace_sample_ratio) == ("", 1.0)
    s = Settings.from_env({"CAIRN_METRICS_ENABLED": "false", "CAIRN_AUTH_METRICS_PORT": "7001",
                           "CAIRN_OTLP_ENDPOINT": "otel:4317", "CAIRN_TRACE_SAMPLE_RATIO": "0.1"})
    assert (s.metrics_enabled, s.metrics_port("auth")) == (False, 7001)
    assert (s.otlp_endpoint, s.trace_sample_ratio) == ("otel:4317", 0.1)


@pytest.mark.parametrize(("name", "raw"), [("CAIRN_METRICS_ENABLED", "maybe"),
                                           ("CAIRN_TRACE_SAMPLE_RATIO", "2"),
                                           ("CAIRN_TRACE_SAMPLE_RATIO", "half")])
def test_bad_observability_values_name_the_variable(name: str, raw: str) -> None:
    with pytest.raises(ValueError, match=name):
        Settings.from_env({name: raw})
