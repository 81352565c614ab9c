"""The call to an OpenAI-compatible chat-completions endpoint that yields a checked verdict.

One ``VerdictClient`` per endpoint and model, reused across calls (it keeps the HTTP connection
pool). ``verify(context)`` never raises for anything the endpoint or the model does; it returns
a ``VerdictResult`` whose ``status`` says what happened:

- ``ok``: a verdict that parsed against the schema and cites only what the context holds.
- ``schema_failed``: the model answered, but twice (the answer and one retry with a note on
  what was wrong) with something unusable: not JSON, not the schema, or invented evidence.
- ``unavailable``: the endpoint could not be used: circuit breaker open, no free slot,
  timeouts, connection failures, 429 or 5xx after bounded retries, or the deadline passed.
  The case goes to human review marked "LLM unavailable".
- ``error``: a failure a retry cannot fix (401, 404, 400, a malformed HTTP body).

Time is bounded everywhere: the connect and read timeouts bound each request, ``deadline_s``
bounds the whole call including retries and back-off, ``slot_wait_s`` bounds the wait for a
concurrency slot, and Retry-After is honoured only up to ``max_retry_after_s``.

Concurrency: at most ``max_concurrency`` calls per endpoint and model are in flight in one
process (a semaphore shared by all clients in the process). Across processes and hosts the
limit is the concurrency of the Celery queue that runs verdicts (e.g. the ``llm`` queue's
workers times their ``--concurrency``); the circuit breaker, over Redis, is shared by all.
"""

from __future__ import annotations

import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, cast

import openai
from openai.types.chat import ChatCompletionMessageParam
from openai.types.chat.completion_create_params import ResponseFormat
from pydantic import ValidationError

from llm_verify.breaker import CircuitBreaker, MemoryBreakerStore, RedisBreakerStore
from llm_verify.context import VerdictContext
from llm_verify.prompt import (
    PROMPT_VERSION,
    PromptBudget,
    prepare_prompt,
    repair_messages,
)
from llm_verify.verdict import (
    Verdict,
    validate_against_context,
    verdict_json_schema,
    verdict_record,
)

logger = logging.getLogger(__name__)

Status = Literal["ok", "schema_failed", "unavailable", "error"]
StructuredOutput = Literal["auto", "json_schema", "json_object"]

# Keywords OpenAI's strict mode does not accept; the same limits are enforced when the
# answer is parsed into ``Verdict``.
_STRICT_UNSUPPORTED = frozenset(
    {"minLength", "maxLength", "minimum", "maximum", "minItems", "maxItems", "pattern"}
)
# 4xx answers that mean "this request is wrong", not "the endpoint is unusable": they do not
# count toward opening the circuit breaker.
_REQUEST_SPECIFIC_STATUS = frozenset({400, 409, 413, 422})
# The error of a call the circuit breaker refused without trying the endpoint.
BREAKER_OPEN_ERROR = "LLM unavailable: circuit breaker open"


@dataclass(frozen=True)
class VerdictClientConfig:
    """How to reach the endpoint and how patient to be. The Django side fills ``base_url``,
    ``model`` and ``api_key`` from ``LLM_BASE_URL``, ``LLM_MODEL`` and ``LLM_API_KEY``.

    ``structured_output`` picks the response format:

    - ``json_schema``: ``{"type": "json_schema", "json_schema": {...}}``, the OpenAI form;
      with ``strict_schema`` the schema is sent without length and range keywords, which
      strict mode rejects.
    - ``json_object``: ``{"type": "json_object", "schema": {...}}``, the form
      llama-cpp-python's server turns into a grammar: one variant per decision (so the
      verdict is coherent by construction), confidence as an enum of 0.05 steps (the grammar
      converter ignores number ranges), string lengths left to the parser (they are slow in
      a grammar).
    - ``auto`` (default): ``json_schema`` first; if the endpoint refuses that form (400, 422,
      or llama-cpp-python's 500 naming ``response_format``), the client switches to
      ``json_object`` for the rest of its life.
    """

    base_url: str
    model: str
    api_key: str = ""
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 60.0
    deadline_s: float = 150.0
    max_transport_attempts: int = 3
    backoff_s: float = 0.5
    max_backoff_s: float = 4.0
    max_retry_after_s: float = 10.0
    max_tokens: int = 512
    temperature: float = 0.0
    seed: int | None = 7
    structured_output: StructuredOutput = "auto"
    strict_schema: bool = True
    prompt_price_per_1k: float = 0.0
    completion_price_per_1k: float = 0.0
    max_concurrency: int = 2
    slot_wait_s: float = 30.0
    budget: PromptBudget = field(default_factory=PromptBudget)


@dataclass
class VerdictResult:
    """What one verification produced; everything the Django side stores with the verdict."""

    status: Status
    verdict: Verdict | None
    model: str
    prompt_version: str
    latency_ms: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated_cost: float = 0.0
    raw_response: str = ""
    error: str = ""
    attempts: int = 0
    problems: list[str] = field(default_factory=list)
    retry_after_s: float | None = None
    structured_output: str = ""
    # The verdict as stored: JSON-able, quoted spans located (see ``verdict_record``).
    record: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["verdict"] = self.record
        return data


class _TransportFailure(Exception):
    """A request that failed in a way the caller reports, after any retries."""

    def __init__(
        self,
        status: Status,
        reason: str,
        *,
        counts_for_breaker: bool,
        retry_after_s: float | None = None,
    ):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.counts_for_breaker = counts_for_breaker
        self.retry_after_s = retry_after_s


class _SchemaRejected(Exception):
    """The endpoint refused the response-format form itself (400/422)."""


_SLOTS: dict[tuple[str, str], threading.BoundedSemaphore] = {}
_SLOTS_LOCK = threading.Lock()


def _process_slots(base_url: str, model: str, size: int) -> threading.BoundedSemaphore:
    """The per-process slots for one endpoint and model; the first client sets the size."""
    with _SLOTS_LOCK:
        key = (base_url.rstrip("/"), model)
        if key not in _SLOTS:
            _SLOTS[key] = threading.BoundedSemaphore(max(1, size))
        return _SLOTS[key]


def breaker_name(base_url: str, model: str) -> str:
    """A Redis-safe breaker name for one endpoint and model."""
    return re.sub(r"[^A-Za-z0-9_.:/|-]", "_", f"{base_url.rstrip('/')}|{model}")


def _strict_schema(node: Any) -> Any:
    if isinstance(node, list):
        return [_strict_schema(item) for item in node]
    if isinstance(node, dict):
        return {k: _strict_schema(v) for k, v in node.items() if k not in _STRICT_UNSUPPORTED}
    return node


# Grammar converters (llama.cpp's among them) ignore ``minimum``/``maximum``; a bounded number
# becomes an enum of steps so that the grammar itself keeps confidence within 0..1.
_CONFIDENCE_STEPS = [round(step * 0.05, 2) for step in range(21)]


# String lengths are left out of the grammar: llama.cpp expands ``maxLength: 300`` into 300
# nested optional rules, which made sampling about three times slower here. The lengths are
# still enforced when the answer is parsed, and ``max_tokens`` bounds the answer.
_GRAMMAR_DROPPED = frozenset({"minLength", "maxLength"})


def _grammar_schema(node: Any) -> Any:
    if isinstance(node, list):
        return [_grammar_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    if node.get("type") == "number" and node.get("minimum") == 0 and node.get("maximum") == 1:
        return {"type": "number", "enum": _CONFIDENCE_STEPS}
    return {k: _grammar_schema(v) for k, v in node.items() if k not in _GRAMMAR_DROPPED}


def _refuses_json_schema(error: openai.APIStatusError) -> bool:
    """Whether the endpoint rejected the ``json_schema`` response-format form itself.

    Standard servers answer 400 or 422. llama-cpp-python's server turns its request
    validation error into a 500 whose message names ``response_format``; that one 500 is
    recognised by its message so it is not retried as a server fault.
    """
    if error.status_code in (400, 422):
        return True
    return error.status_code == 500 and "response_format" in str(error.body or error.message)


def _retry_after(error: openai.APIStatusError) -> float | None:
    headers = error.response.headers
    for header, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(header)
        if value is None:
            continue
        try:
            return max(0.0, float(value) / divisor)
        except ValueError:
            continue
    return None


def _strip_fences(text: str) -> str:
    """Some servers wrap JSON in a Markdown fence even in JSON mode."""
    text = text.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        if text.rstrip().endswith("```"):
            text = text.rstrip()[:-3]
    return text.strip()


def parse_verdict(text: str) -> tuple[Verdict | None, list[str]]:
    """Parse a model's answer into a ``Verdict``; returns it or the reasons it is unusable."""
    body = _strip_fences(text)
    try:
        json.loads(body)
    except json.JSONDecodeError as exc:
        return None, [f"answer is not JSON ({exc.msg} at char {exc.pos})"]
    try:
        return Verdict.model_validate_json(body), []
    except ValidationError as exc:
        problems = []
        for error in exc.errors()[:6]:
            where = ".".join(str(part) for part in error["loc"]) or "answer"
            problems.append(f"{where}: {error['msg']}")
        return None, problems


class VerdictClient:
    """Verifies flagged listings against one endpoint and model."""

    def __init__(
        self,
        config: VerdictClientConfig,
        *,
        breaker: CircuitBreaker | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.config = config
        self.breaker = breaker or CircuitBreaker(
            name=breaker_name(config.base_url, config.model),
            store=MemoryBreakerStore(),
            probe_ttl_s=config.deadline_s,
        )
        self._sleep = sleep
        self._slots = _process_slots(config.base_url, config.model, config.max_concurrency)
        self._format: StructuredOutput = (
            "json_schema" if config.structured_output == "auto" else config.structured_output
        )
        self._openai = openai.OpenAI(
            base_url=config.base_url,
            # Local servers want no key, but the client insists on one.
            api_key=config.api_key or "no-key",
            max_retries=0,  # retries are decided here, with the deadline in view
            timeout=openai.Timeout(config.read_timeout_s, connect=config.connect_timeout_s),
        )

    def close(self) -> None:
        self._openai.close()

    # --- the request -------------------------------------------------------------------

    def response_format(self, context: Mapping[str, Any]) -> dict[str, Any]:
        """The ``response_format`` for a prepared context, in the form the endpoint takes."""
        if self._format == "json_object":
            schema = verdict_json_schema(context, by_decision=True)
            return {"type": "json_object", "schema": _grammar_schema(schema)}
        schema = verdict_json_schema(context)
        strict = self.config.strict_schema
        return {
            "type": "json_schema",
            "json_schema": {
                "name": "listing_verdict",
                "strict": strict,
                "schema": _strict_schema(schema) if strict else schema,
            },
        }

    def create_completion(
        self,
        messages: list[dict[str, str]],
        response_format: dict[str, Any],
        timeout: openai.Timeout,
    ) -> Any:
        """One bare chat-completions request (no retries); raises what openai raises."""
        extra: dict[str, Any] = {}
        if self.config.seed is not None:
            extra["seed"] = self.config.seed
        return self._openai.chat.completions.create(
            model=self.config.model,
            # Plain dicts of the shapes these TypedDicts describe (prompt.py builds them).
            messages=cast("list[ChatCompletionMessageParam]", messages),
            response_format=cast("ResponseFormat", response_format),
            max_tokens=self.config.max_tokens,
            temperature=self.config.temperature,
            timeout=timeout,
            **extra,
        )

    def _request(
        self,
        messages: list[dict[str, str]],
        context: Mapping[str, Any],
        deadline: float,
        counter: list[int],
    ) -> Any:
        """One answer from the endpoint, retrying what a retry can fix, within the deadline."""
        config = self.config
        last_reason = "deadline passed before the request"
        transport_attempts = 0
        while transport_attempts < config.max_transport_attempts:
            remaining = deadline - time.monotonic()
            if remaining <= 0.05:
                break
            timeout = openai.Timeout(
                min(config.read_timeout_s, remaining),
                connect=min(config.connect_timeout_s, remaining),
            )
            transport_attempts += 1
            counter[0] += 1
            delay: float | None = None
            try:
                return self.create_completion(messages, self.response_format(context), timeout)
            except openai.APITimeoutError:
                last_reason = "timed out"
            except openai.APIConnectionError as exc:
                last_reason = f"connection failed: {exc.__cause__ or exc}"
            except openai.APIStatusError as exc:
                code = exc.status_code
                if (
                    config.structured_output == "auto"
                    and _refuses_json_schema(exc)
                    and self._format == "json_schema"
                ):
                    logger.info(
                        "llm endpoint %s refused json_schema (%s); using json_object",
                        config.base_url,
                        code,
                    )
                    self._format = "json_object"
                    transport_attempts -= 1  # a change of form, not a retry
                    continue
                if code == 429:
                    retry_after = _retry_after(exc)
                    if retry_after is not None and retry_after > config.max_retry_after_s:
                        raise _TransportFailure(
                            "unavailable",
                            f"rate limited (429), Retry-After {retry_after:g}s exceeds the cap",
                            counts_for_breaker=True,
                            retry_after_s=retry_after,
                        ) from exc
                    last_reason = "rate limited (429)"
                    delay = retry_after
                elif code >= 500 or code == 408:
                    last_reason = f"server error ({code})"
                else:
                    raise _TransportFailure(
                        "error",
                        f"endpoint refused the request ({code}): {str(exc)[:300]}",
                        counts_for_breaker=code not in _REQUEST_SPECIFIC_STATUS,
                    ) from exc
            except (openai.APIError, ValueError) as exc:
                # A body that is not the protocol's JSON (a proxy's error page, say).
                raise _TransportFailure(
                    "error", f"malformed response: {str(exc)[:300]}", counts_for_breaker=True
                ) from exc
            if transport_attempts >= config.max_transport_attempts:
                break
            if delay is None:
                base = min(config.max_backoff_s, config.backoff_s * 2 ** (transport_attempts - 1))
                delay = base * (0.5 + random.random() / 2)
            if time.monotonic() + delay >= deadline:
                last_reason += "; no time left for a retry"
                break
            self._sleep(delay)
        raise _TransportFailure(
            "unavailable",
            f"{last_reason} after {transport_attempts} attempt(s)",
            counts_for_breaker=True,
        )

    # --- the verification -------------------------------------------------------------

    def verify(self, context: VerdictContext | Mapping[str, Any]) -> VerdictResult:
        """A checked verdict for one case; never raises for endpoint or model failures."""
        config = self.config
        started = time.monotonic()
        deadline = started + config.deadline_s
        result = VerdictResult(
            status="error",
            verdict=None,
            model=config.model,
            prompt_version=PROMPT_VERSION,
            latency_ms=0,
        )

        def finish(status: Status, error: str = "") -> VerdictResult:
            result.status = status
            result.error = error
            result.latency_ms = round((time.monotonic() - started) * 1000)
            result.estimated_cost = round(
                result.prompt_tokens / 1000 * config.prompt_price_per_1k
                + result.completion_tokens / 1000 * config.completion_price_per_1k,
                6,
            )
            return result

        prepared = prepare_prompt(context, config.budget)

        breaker_open = BREAKER_OPEN_ERROR
        if self.breaker.state() == "open":  # fail fast, without waiting for a slot
            return finish("unavailable", breaker_open)
        if not self._slots.acquire(timeout=max(0.0, min(config.slot_wait_s, config.deadline_s))):
            return finish("unavailable", "LLM unavailable: no free slot in this process")
        counter = [0]
        try:
            # Asked only once a slot is held: in half-open state this takes the single probe.
            if not self.breaker.allow():
                return finish("unavailable", breaker_open)
            messages = prepared.messages
            for answer_round in range(2):
                try:
                    completion = self._request(messages, prepared.context, deadline, counter)
                except _TransportFailure as failure:
                    if failure.counts_for_breaker:
                        self.breaker.record_failure()
                    else:
                        self.breaker.record_success()
                    result.retry_after_s = failure.retry_after_s
                    result.attempts = counter[0]
                    result.structured_output = self._format
                    return finish(failure.status, failure.reason)
                except Exception as exc:  # a bug or an unforeseen client error: still no raise
                    logger.exception("llm verification failed unexpectedly")
                    self.breaker.record_failure()
                    result.attempts = counter[0]
                    return finish("error", f"unexpected {type(exc).__name__}: {exc}")
                result.attempts = counter[0]
                result.structured_output = self._format
                usage = getattr(completion, "usage", None)
                if usage is not None:
                    result.prompt_tokens += int(usage.prompt_tokens or 0)
                    result.completion_tokens += int(usage.completion_tokens or 0)
                choice = completion.choices[0] if completion.choices else None
                text = (choice.message.content or "") if choice is not None else ""
                result.raw_response = text
                verdict, problems = parse_verdict(text)
                if verdict is not None:
                    problems = validate_against_context(verdict, prepared.context)
                if choice is not None and choice.finish_reason == "length" and problems:
                    problems.insert(0, f"answer cut at max_tokens ({config.max_tokens})")
                if verdict is not None and not problems:
                    self.breaker.record_success()
                    result.verdict = verdict
                    result.record = verdict_record(verdict, prepared.context)
                    result.problems = []
                    return finish("ok")
                result.problems = [f"answer {answer_round + 1}: {p}" for p in problems]
                if answer_round == 0:
                    first_problems = result.problems
                    messages = repair_messages(prepared.messages, problems)
            # The endpoint works; the model's answers do not.
            self.breaker.record_success()
            result.problems = first_problems + result.problems
            return finish("schema_failed", "no usable verdict after one retry")
        finally:
            self._slots.release()


def make_verdict_client(
    base_url: str,
    model: str,
    api_key: str = "",
    *,
    redis_url: str | None = None,
    breaker_prefix: str = "moderation:llm_breaker:",
    failure_threshold: int = 5,
    window_s: float = 60.0,
    cooldown_s: float = 30.0,
    **config: Any,
) -> VerdictClient:
    """A client for one endpoint and model, its breaker in Redis when ``redis_url`` is given
    (shared by every worker) or in this process otherwise. ``config`` sets any other
    ``VerdictClientConfig`` field. Build one per process and reuse it."""
    if not base_url or not model:
        raise ValueError("an LLM endpoint needs both a base URL and a model name")
    settings = VerdictClientConfig(base_url=base_url, model=model, api_key=api_key, **config)
    store: Any
    if redis_url:
        store = RedisBreakerStore.from_url(redis_url, prefix=breaker_prefix)
    else:
        store = MemoryBreakerStore()
    breaker = CircuitBreaker(
        name=breaker_name(base_url, model),
        store=store,
        failure_threshold=failure_threshold,
        window_s=window_s,
        cooldown_s=cooldown_s,
        probe_ttl_s=settings.deadline_s,
    )
    return VerdictClient(settings, breaker=breaker)
