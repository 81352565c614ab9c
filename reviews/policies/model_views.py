"""Champion against challengers, for QA leads and policy admins: the `/models/` page and
`GET /api/v1/models/compare/?challenger=<model version>[&days=N]`."""

from django.http import Http404
from django.shortcuts import render
from django.views.decorators.http import require_GET
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from moderation_portal.core.access import POLICY_ADMIN, QA_LEAD, role_permission, role_required
from moderation_portal.core.api import error_response
from reviews.policies import services
from reviews.policies.challengers import (
    MODELS,
    ROUTE_LABELS,
    any_challenger,
    challenger_compare,
    challenger_exists,
    challengers_seen,
)
from reviews.policies.ladder import ROUTES

MODEL_READERS = (QA_LEAD, POLICY_ADMIN)
DEFAULT_DAYS = 30
MAX_DAYS = 365
MAX_VERSION_CHARS = 64  # the event schema's limit on a model_version


class BadParameter(ValueError):
    pass


def _days(raw: str | None) -> int:
    if raw in (None, ""):
        return DEFAULT_DAYS
    try:
        days = int(raw)
    except ValueError as exc:
        raise BadParameter(f"days must be a whole number from 1 to {MAX_DAYS}.") from exc
    if not 1 <= days <= MAX_DAYS:
        raise BadParameter(f"days must be a whole number from 1 to {MAX_DAYS}.")
    return days


def _compare(challenger: str, days: int) -> dict:
    active = services.ladder_active()
    result = challenger_compare(challenger=challenger, thresholds=active.thresholds, days=days)
    return {"ladder_version": active.version, **result}


CLASSIFICATION_COLUMNS = (
    ("action", "precision", "precision at action"),
    ("action", "recall", "recall at action"),
    ("review", "precision", "precision at review"),
    ("review", "recall", "recall at review"),
)


def _section(title: str, figures: dict, names: dict[str, str]) -> dict:
    """One policy (or all of them) as the page's two tables show it, a row per model."""
    return {
        "title": title,
        "thresholds": figures.get("thresholds"),
        "judged": figures["judged"],
        "violations": figures["violations"],
        "empty": not figures["judged"] and not any(figures[m]["routed"] for m in MODELS),
        "classification": [
            {
                "model": names[model],
                "cells": [figures[model][at][what] for at, what, _ in CLASSIFICATION_COLUMNS]
                + [figures[model]["agreement"]],
                "kappa": figures[model]["kappa"],
            }
            for model in MODELS
        ],
        "routing": [
            {
                "model": names[model],
                "routed": figures[model]["routed"],
                "cells": [figures[model]["routes"][route] for route in ROUTES],
            }
            for model in MODELS
        ],
    }


def _page_sections(comparison: dict) -> list[dict]:
    champion = ", ".join(comparison["champion_versions"]) or "none"
    names = {
        MODELS[0]: f"champion ({champion})",
        MODELS[1]: f"challenger {comparison['challenger']}",
    }
    return [_section("All policies", comparison["overall"], names)] + [
        _section(row["policy"], row, names) for row in comparison["policies"]
    ]


@require_GET
@role_required(*MODEL_READERS)
def models_page(request):
    try:
        days = _days(request.GET.get("days"))
    except BadParameter:
        days = DEFAULT_DAYS
    seen = challengers_seen(days=days)
    chosen = request.GET.get("challenger") or (seen[0]["model_version"] if seen else None)
    comparison = None
    outside_window = False  # the chosen challenger scored cases, none of them in the window
    if chosen is not None:
        if any(row["model_version"] == chosen for row in seen):
            comparison = _compare(chosen, days)
        elif len(chosen) <= MAX_VERSION_CHARS and challenger_exists(chosen):
            outside_window = True
        else:
            raise Http404("no challenger of that model version has scored any case")
    return render(
        request,
        "reviews/models.html",
        {
            "challengers": seen,
            "chosen": chosen,
            "outside_window": outside_window,
            # nothing in the window, but challengers scored cases before it
            "older_only": not seen and not outside_window and any_challenger(),
            "days": days,
            "max_days": MAX_DAYS,
            "comparison": comparison,
            "sections": _page_sections(comparison) if comparison else [],
            "moves": [
                {"route": route, "counts": counts}
                for route, counts in zip(comparison["routes"], comparison["moves"], strict=True)
            ]
            if comparison
            else [],
            "classification_columns": [label for _, _, label in CLASSIFICATION_COLUMNS],
            "route_labels": [ROUTE_LABELS[route] for route in ROUTES],
        },
    )


class ModelCompareApi(APIView):
    permission_classes = [role_permission(*MODEL_READERS)]

    @extend_schema(
        parameters=[
            OpenApiParameter("challenger", str, required=True, description="model version"),
            OpenApiParameter("days", int, required=False, description="1-365, default 30"),
        ],
        responses={
            200: OpenApiResponse(description="the champion and the challenger, per policy"),
            400: OpenApiResponse(description="no challenger given, or a bad days"),
            404: OpenApiResponse(description="no challenger of that model version scored a case"),
        },
    )
    def get(self, request):
        challenger = request.query_params.get("challenger", "")
        if not challenger:
            return error_response(
                "missing_parameter",
                "Give challenger=<model version>; GET /models/ lists those seen.",
                status_code=400,
            )
        if len(challenger) > MAX_VERSION_CHARS:
            return error_response(
                "invalid",
                f"challenger is a model version of at most {MAX_VERSION_CHARS} characters.",
                status_code=400,
            )
        try:
            days = _days(request.query_params.get("days"))
        except BadParameter as exc:
            return error_response("invalid", str(exc), status_code=400)
        if not challenger_exists(challenger):
            return error_response(
                "unknown_challenger",
                "No challenger of that model version has scored any case.",
                status_code=404,
                details={
                    "challengers": [row["model_version"] for row in challengers_seen(days=days)],
                    "days": days,
                },
            )
        return Response(_compare(challenger, days))
