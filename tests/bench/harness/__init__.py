"""`make bench`: the stack under load, every figure beside floors measured in the same run.

`python -m tests.bench.harness` starts the stack as `make run` does (on free ports, default
settings), adds two bench-only things Envoy never has in production (a direct-response route and
a bare grpc.aio echo service behind its own route), drives each scenario from a separate load
process (wrk for HTTP/1.1, h2load for gRPC, an asyncio client where a scenario needs state), and
writes docs/benchmarks/report.md and report.json.
"""
