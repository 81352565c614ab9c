"""Structured LLM verdicts for flagged listings.

Django-free: the modules here take plain dicts and dataclasses. ``verdict`` holds the verdict
model and its checks, ``prompt`` the versioned prompt and the context shape, ``client`` the call
to an OpenAI-compatible endpoint, ``breaker`` the circuit breaker, ``local_server`` the local
SmolLM2 server. This file stays free of imports so that importing the package costs nothing.
"""
