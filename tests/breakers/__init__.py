"""Breakers: the anyio circuit breaker, real fluxgate breakers feeding us, breaker health."""
