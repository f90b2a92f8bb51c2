"""The HTTP API v1: controllers per resource, their representations, and the request machinery
(authentication, rate limits, idempotency, read-your-writes, problem details)."""
