"""The whole stack on one machine: embedded Redis, the four services and Envoy."""
