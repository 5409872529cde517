"""Real servers and processes on loopback for the integration tests: upstreams, a gateway, a raw client."""
