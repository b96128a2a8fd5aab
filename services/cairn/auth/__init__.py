"""The auth service: accounts, bearer tokens, and Envoy's external authorization."""
