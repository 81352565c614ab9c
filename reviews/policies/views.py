"""Pages for policy admins: edit a draft ladder, backtest it, publish it, diff, export, import."""

from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from detection.policies import POLICY_CODES
from moderation_portal.core.access import POLICY_ADMIN, QA_LEAD, has_role, role_required
from reviews.policies import ladder as ladder_rules
from reviews.policies import repeat as repeat_rules
from reviews.policies import services
from reviews.policies import statements as mapping_rules
from reviews.policies.backtest import backtest
from reviews.policies.models import LadderVersion

LADDER_READERS = (POLICY_ADMIN, QA_LEAD)
MAX_BACKTEST_DAYS = 90


def _parse_form(post) -> dict:
    """The draft editor's fields are named <policy>.<field>; values are checked by validate()."""
    thresholds: dict = {}
    for code in POLICY_CODES:
        row: dict = {}
        for key in ladder_rules.FIELDS:
            raw = post.get(f"{code}.{key}", "").strip()
            if key in ("severity", "sla_hours"):
                try:
                    row[key] = int(raw)
                except ValueError:
                    row[key] = raw
            else:
                try:
                    row[key] = float(raw)
                except ValueError:
                    row[key] = raw
        thresholds[code] = row
    return thresholds


def _rows(thresholds: dict, compare: dict | None = None) -> list[dict]:
    rows = []
    for code in POLICY_CODES:
        row = thresholds.get(code, {})
        cells = []
        for key in ladder_rules.FIELDS:
            changed = compare is not None and compare.get(code, {}).get(key) != row.get(key)
            cells.append(
                {
                    "key": key,
                    "value": row.get(key, ""),
                    "name": f"{code}.{key}",
                    "changed": changed,
                    "step": "1" if key in ("severity", "sla_hours") else "0.01",
                }
            )
        rows.append({"code": code, "cells": cells})
    return rows


@require_GET
@role_required(*LADDER_READERS)
def ladder_page(request):
    active = services.ladder_active()
    draft = services.ladder_draft()
    try:
        days = max(1, min(int(request.GET.get("days", "7")), MAX_BACKTEST_DAYS))
    except ValueError:
        days = 7
    context = {
        "active": active,
        "active_rows": _rows(active.thresholds),
        "draft": draft,
        "draft_rows": _rows(draft.thresholds, active.thresholds) if draft else None,
        "draft_changes": ladder_rules.diff(active.thresholds, draft.thresholds) if draft else [],
        "versions": LadderVersion.objects.filter(
            state=LadderVersion.State.PUBLISHED
        ).select_related("published_by"),
        "fields": ladder_rules.FIELDS,
        "can_edit": has_role(request.user, POLICY_ADMIN),
        "days": days,
        "backtest": backtest(draft=draft.thresholds, active=active.thresholds, days=days)
        if draft
        else None,
        "form_errors": request.session.pop("ladder_errors", None),
        "mapping": _mapping_rows(draft.statement_mapping if draft else active.statement_mapping),
        "mapping_of": "draft" if draft else f"version {active.version}",
        "mapping_changes": mapping_rules.mapping_diff(
            active.statement_mapping, draft.statement_mapping
        )
        if draft
        else [],
        "grounds": mapping_rules.GROUNDS,
        "categories": mapping_rules.CATEGORIES,
        "keywords": mapping_rules.KEYWORDS,
        "countries": mapping_rules.EEA_COUNTRIES,
        "repeat_rows": _repeat_rows(draft.repeat_rules if draft else active.repeat_rules),
        "repeat_changes": repeat_rules.rules_diff(active.repeat_rules, draft.repeat_rules)
        if draft
        else [],
        "known_bad_choices": repeat_rules.KNOWN_BAD_CHOICES,
    }
    return render(request, "reviews/ladder.html", context)


def _mapping_rows(mapping: dict) -> dict:
    policies = mapping.get("policies", {})
    return {
        "territorial_scope": mapping.get("territorial_scope", []),
        "rows": [{"code": code, **policies.get(code, {})} for code in POLICY_CODES],
    }


def _parse_mapping_form(post) -> dict:
    policies = {}
    for code in POLICY_CODES:
        row = {
            "decision_ground": post.get(f"{code}.decision_ground", ""),
            "category": post.get(f"{code}.category", ""),
            "category_specification": post.getlist(f"{code}.category_specification")[:20],
            "ground": post.get(f"{code}.ground", "")[:5000],
            "explanation": post.get(f"{code}.explanation", "")[:5000],
        }
        if row["decision_ground"] == mapping_rules.GROUND_INCOMPATIBLE:
            row["incompatible_content_illegal"] = post.get(
                f"{code}.incompatible_content_illegal", "No"
            )
        policies[code] = row
    return {"territorial_scope": post.getlist("territorial_scope")[:40], "policies": policies}


def _repeat_rows(rules: dict) -> list[dict]:
    return [
        {"code": code, **repeat_rules.DEFAULT_RULES, **rules.get(code, {})} for code in POLICY_CODES
    ]


def _parse_repeat_form(post) -> dict:
    """<policy>.<field> fields; a value that is not a number is kept as text for validation to
    name."""
    rules: dict = {}
    for code in POLICY_CODES:
        row: dict = {}
        for key in repeat_rules.FIELDS:
            raw = post.get(f"{code}.{key}", "").strip()[:50]
            if key == "known_bad":
                row[key] = raw
                continue
            try:
                row[key] = float(raw) if key == "suspend_share" else int(raw)
            except ValueError:
                row[key] = raw
        rules[code] = row
    return rules


@require_POST
@role_required(POLICY_ADMIN)
def ladder_repeat_save(request):
    """Save the draft's strike and known-bad rules (a new draft starts if there is none)."""
    try:
        clean = repeat_rules.rules_validate(_parse_repeat_form(request.POST))
    except repeat_rules.RepeatRulesError as exc:
        request.session["ladder_errors"] = [f"repeat rules: {p}" for p in exc.problems]
        messages.error(request, "The strike rules were not saved: fix the problems listed.")
        return redirect("reviews:ladder")
    services.ladder_draft_save(user=request.user, repeat_rules=clean)
    messages.success(request, "Strike rules saved in the draft; they apply once published.")
    return redirect("reviews:ladder")


@require_POST
@role_required(POLICY_ADMIN)
def ladder_statements_save(request):
    """Save the draft's statement-of-reasons mapping (a new draft starts if there is none)."""
    try:
        clean = mapping_rules.mapping_validate(_parse_mapping_form(request.POST))
    except mapping_rules.MappingError as exc:
        request.session["ladder_errors"] = [f"statement mapping: {p}" for p in exc.problems]
        messages.error(request, "The statement mapping was not saved: fix the problems listed.")
        return redirect("reviews:ladder")
    services.ladder_draft_save(user=request.user, statement_mapping=clean)
    messages.success(request, "Statement mapping saved in the draft; it applies once published.")
    return redirect("reviews:ladder")


@require_POST
@role_required(POLICY_ADMIN)
def ladder_draft_start(request):
    if services.ladder_draft() is not None:
        messages.info(request, "A draft already exists.")
    else:
        services.ladder_draft_save(
            user=request.user, thresholds=services.ladder_active().thresholds, notes=""
        )
        messages.success(request, "Draft started from the active version.")
    return redirect("reviews:ladder")


@require_POST
@role_required(POLICY_ADMIN)
def ladder_draft_save(request):
    thresholds = _parse_form(request.POST)
    notes = request.POST.get("notes", "")[:2000]
    try:
        clean = ladder_rules.validate(thresholds)
    except ladder_rules.LadderError as exc:
        request.session["ladder_errors"] = exc.problems
        messages.error(request, "The draft was not saved: fix the problems listed.")
        return redirect("reviews:ladder")
    services.ladder_draft_save(user=request.user, thresholds=clean, notes=notes)
    messages.success(request, "Draft saved.")
    return redirect("reviews:ladder")


@require_POST
@role_required(POLICY_ADMIN)
def ladder_draft_discard(request):
    services.ladder_draft_discard(user=request.user)
    messages.info(request, "Draft discarded.")
    return redirect("reviews:ladder")


@require_POST
@role_required(POLICY_ADMIN)
def ladder_publish(request):
    try:
        version = services.ladder_publish(user=request.user)
    except LadderVersion.DoesNotExist:
        messages.error(request, "There is no draft to publish.")
        return redirect("reviews:ladder")
    except ladder_rules.LadderError as exc:
        request.session["ladder_errors"] = exc.problems
        return redirect("reviews:ladder")
    messages.success(request, f"Published ladder version {version.version}; new cases route by it.")
    return redirect("reviews:ladder")


def _published(number: int) -> LadderVersion:
    try:
        return LadderVersion.objects.get(version=number, state=LadderVersion.State.PUBLISHED)
    except LadderVersion.DoesNotExist as exc:
        raise Http404("no such ladder version") from exc


@require_POST
@role_required(POLICY_ADMIN)
def ladder_activate(request, number: int):
    version = services.ladder_activate(user=request.user, version=_published(number))
    messages.success(request, f"Version {version.version} is active again.")
    return redirect("reviews:ladder")


@require_GET
@role_required(*LADDER_READERS)
def ladder_version(request, number: int):
    version = _published(number)
    previous = (
        LadderVersion.objects.filter(state=LadderVersion.State.PUBLISHED, version__lt=number)
        .order_by("-version")
        .first()
    )
    return render(
        request,
        "reviews/ladder_version.html",
        {
            "version": version,
            "rows": _rows(version.thresholds, previous.thresholds if previous else None),
            "previous": previous,
            "changes": ladder_rules.diff(previous.thresholds, version.thresholds)
            if previous
            else [],
            "fields": ladder_rules.FIELDS,
            "can_edit": has_role(request.user, POLICY_ADMIN),
        },
    )


def _yaml_response(text: str, filename: str) -> HttpResponse:
    response = HttpResponse(text, content_type="application/yaml; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@require_GET
@role_required(*LADDER_READERS)
def ladder_export(request, number: int):
    version = _published(number)
    return _yaml_response(
        ladder_rules.to_yaml(
            thresholds=version.thresholds, version=version.version, notes=version.notes
        ),
        f"policy-ladder-v{version.version}.yaml",
    )


@require_GET
@role_required(*LADDER_READERS)
def ladder_draft_export(request):
    draft = services.ladder_draft()
    if draft is None:
        raise Http404("no draft")
    return _yaml_response(
        ladder_rules.to_yaml(thresholds=draft.thresholds, version=None, notes=draft.notes),
        "policy-ladder-draft.yaml",
    )


@require_POST
@role_required(POLICY_ADMIN)
def ladder_import(request):
    upload = request.FILES.get("file")
    if upload is None:
        messages.error(request, "Choose a YAML file to import.")
        return redirect("reviews:ladder")
    if upload.size > ladder_rules.MAX_YAML_BYTES:
        request.session["ladder_errors"] = [f"the file is over {ladder_rules.MAX_YAML_BYTES} bytes"]
        return redirect("reviews:ladder")
    try:
        thresholds, notes = ladder_rules.from_yaml(upload.read())
    except ladder_rules.LadderError as exc:
        request.session["ladder_errors"] = exc.problems
        messages.error(request, "The file was not imported.")
        return redirect("reviews:ladder")
    services.ladder_draft_save(user=request.user, thresholds=thresholds, notes=notes)
    messages.success(request, "Imported as the draft: review the backtest, then publish.")
    return redirect("reviews:ladder")
