"""The auth service: accounts, plans and usage, tokens, OAuth2 login, and Envoy's ext_authz."""
