"""Obtaining and storing verdicts. The caller (reviews) builds the context and applies the
verdict to routing; this layer only asks, checks and records."""

import logging
import threading
from collections.abc import Mapping
from typing import Any

from django.conf import settings

from detection.intake.storable import escape_unstorable
from llm_verify.models import LlmVerdict
from moderation_portal.core import metrics

logger = logging.getLogger(__name__)
MAX_RAW_CHARS = 20_000

_lock = threading.Lock()
_clients: dict[tuple, object] = {}


def configured() -> bool:
    return bool(settings.LLM_BASE_URL and settings.LLM_MODEL)


def client():
    """One client per process and endpoint; its circuit breaker lives in Redis when there is one."""
    from llm_verify.client import make_verdict_client

    key = (settings.LLM_BASE_URL, settings.LLM_MODEL, settings.LLM_API_KEY)
    with _lock:
        existing = _clients.get(key)
        if existing is None:
            existing = _clients[key] = make_verdict_client(
                settings.LLM_BASE_URL,
                settings.LLM_MODEL,
                settings.LLM_API_KEY or "",
                redis_url=settings.REDIS_URL,
                failure_threshold=settings.LLM_BREAKER_FAILURES,
                cooldown_s=settings.LLM_BREAKER_COOLDOWN_SECONDS,
                read_timeout_s=settings.LLM_READ_TIMEOUT_SECONDS,
                deadline_s=settings.LLM_DEADLINE_SECONDS,
                max_concurrency=settings.LLM_MAX_CONCURRENCY,
                prompt_price_per_1k=settings.LLM_PROMPT_PRICE_PER_1K,
                completion_price_per_1k=settings.LLM_COMPLETION_PRICE_PER_1K,
            )
    return existing


def _storable(value: Any) -> Any:
    """The model's text as PostgreSQL can hold it: a NUL or a lone surrogate (which a JSON
    answer can carry as an escape) written as a \\uXXXX escape, so the answer is kept."""
    if isinstance(value, str):
        return escape_unstorable(value)
    if isinstance(value, list):
        return [_storable(item) for item in value]
    if isinstance(value, dict):
        return {_storable(key): _storable(item) for key, item in value.items()}
    return value


def verdict_obtain(*, event_id: int, context: dict) -> LlmVerdict:
    """Ask the configured endpoint for a checked verdict on one flag, and record the result."""
    result = client().verify(context)
    if metrics.ENABLED:
        _verdict_count(result, context)
    verdict = result.verdict
    record = _storable(result.record or {})
    row = LlmVerdict.objects.create(
        event_id=event_id,
        status=result.status
        if result.status in LlmVerdict.Status.values
        else LlmVerdict.Status.ERROR,
        decision=verdict.decision if verdict else "",
        policy=(verdict.policy or "") if verdict else "",
        confidence=verdict.confidence if verdict else None,
        rationale=_storable(verdict.rationale) if verdict else "",
        evidence=record.get("evidence", []) if verdict else [],
        recommended_action=verdict.recommended_action if verdict else "",
        model=result.model,
        prompt_version=result.prompt_version,
        latency_ms=result.latency_ms,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        estimated_cost=result.estimated_cost,
        raw_response=_storable(result.raw_response or "")[:MAX_RAW_CHARS],
        error=_storable(result.error or "")[:2000],
        problems=_storable(list(result.problems)[:20]),
        attempts=result.attempts,
        context=context,
    )
    logger.info(
        "LLM verdict for event %s: %s %s (%s ms)",
        event_id,
        row.status,
        row.decision,
        row.latency_ms,
    )
    return row


def _outcome(result: Any, context: Mapping[str, Any]) -> str:
    """The outcome label of a `llm_verify.client.VerdictResult`: `confirmed` (a usable verdict
    naming the violation the detection tier flagged), `disputed` (a usable verdict that does
    not: no violation, or another policy), `uncertain`, `invalid` (answers that failed the
    schema or cited what the context lacks), `failed` (an error a retry cannot fix),
    `unavailable` (timeouts, 5xx, no free slot) or `breaker_open` (refused at once by the
    circuit breaker). `not_configured` is counted where a case finds no LLM configured."""
    if result.status == "ok" and result.verdict is not None:
        if result.verdict.decision == "uncertain":
            return "uncertain"
        flagged = (context.get("policy") or {}).get("code")
        agrees = result.verdict.decision == "violation" and result.verdict.policy == flagged
        return "confirmed" if agrees else "disputed"
    if result.status == "schema_failed":
        return "invalid"
    if result.status == "unavailable":
        from llm_verify.client import BREAKER_OPEN_ERROR  # loaded already: it made `result`

        return "breaker_open" if result.error == BREAKER_OPEN_ERROR else "unavailable"
    return "failed"


def _verdict_count(result: Any, context: Mapping[str, Any]) -> None:
    outcome = _outcome(result, context)
    metrics.LLM_VERDICTS.labels(outcome).inc()
    metrics.LLM_LATENCY.labels(outcome).observe(result.latency_ms / 1000)
    if result.prompt_tokens:
        metrics.LLM_TOKENS.labels("prompt").inc(result.prompt_tokens)
    if result.completion_tokens:
        metrics.LLM_TOKENS.labels("completion").inc(result.completion_tokens)
    if result.estimated_cost:
        metrics.LLM_COST.inc(result.estimated_cost)
