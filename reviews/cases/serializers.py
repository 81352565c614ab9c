from rest_framework import serializers

from detection.policies import POLICY_CODES
from reviews.cases.evidence import case_evidence
from reviews.cases.models import Case
from reviews.decisions.models import Decision
from reviews.decisions.rules import MAX_NOTES, decision_problems, normalised_policy


class ImageOutput(serializers.Serializer):
    id = serializers.CharField(source="external_id")
    sha256 = serializers.CharField()
    state = serializers.CharField()
    width = serializers.IntegerField(allow_null=True)
    height = serializers.IntegerField(allow_null=True)
    content_type = serializers.CharField()


class DecisionOutput(serializers.Serializer):
    id = serializers.IntegerField()
    verdict = serializers.CharField()
    policy = serializers.CharField(source="policy_id", allow_null=True)
    action = serializers.CharField()
    notes = serializers.CharField()
    source = serializers.CharField()
    decided_by = serializers.SerializerMethodField()
    ladder_version = serializers.IntegerField(source="ladder_version.version")
    time_on_case_ms = serializers.IntegerField(allow_null=True)
    created_at = serializers.DateTimeField()

    def get_decided_by(self, obj) -> str | None:
        return obj.decided_by.get_username() if obj.decided_by_id else None


class CaseOutput(serializers.Serializer):
    id = serializers.IntegerField()
    state = serializers.CharField()
    trace_id = serializers.CharField()
    policy = serializers.CharField(source="policy_id")
    score = serializers.FloatField()
    created_at = serializers.DateTimeField()
    sla_due_at = serializers.DateTimeField()
    priority_key = serializers.DateTimeField()
    routing = serializers.SerializerMethodField()
    claim = serializers.SerializerMethodField()
    listing = serializers.SerializerMethodField()
    seller = serializers.SerializerMethodField()
    detection = serializers.SerializerMethodField()
    enrichment = serializers.SerializerMethodField()
    verdicts = serializers.SerializerMethodField()
    decisions = serializers.SerializerMethodField()

    def get_routing(self, case: Case) -> dict:
        return {
            "route": case.route,
            "reason": case.route_reason,
            "ladder_version": case.ladder_version.version,
            "queue_kind": case.queue_kind,
        }

    def get_claim(self, case: Case) -> dict | None:
        if case.state != Case.State.CLAIMED:
            return None
        return {
            "claimed_by": case.claimed_by.get_username() if case.claimed_by_id else None,
            "claimed_at": case.claimed_at,
            "lease_expires_at": case.lease_expires_at,
        }

    def get_listing(self, case: Case) -> dict:
        li = case.listing
        return {
            "id": li.external_id,
            "title": li.title,
            "description": li.description,
            "price": {"amount": str(li.price_amount), "currency": li.price_currency},
            "category": li.category,
            "region": li.region,
            "language": li.language,
            "created_at": li.listed_at,
            "images": ImageOutput(self._evidence(case)["images"], many=True).data,
        }

    def get_seller(self, case: Case) -> dict:
        s = case.listing.seller
        return {
            "id": s.external_id,
            "account_created_at": s.account_created_at,
            "prior_violations": s.prior_violations,
            "country": s.country,
        }

    def get_detection(self, case: Case) -> dict:
        ev = case.detection_event
        return {
            "event_id": ev.event_id,
            "model": ev.model_name,
            "model_version": ev.model_version,
            "scores": ev.scores,
            "modality_scores": ev.modality_scores,
            "reason_codes": ev.reason_codes,
            "sample": ev.is_sample,
            "emitted_at": ev.emitted_at,
        }

    def _evidence(self, case: Case) -> dict:
        """From the view's batch (context "evidence": case id → evidence), else for this case."""
        batch = self.context.setdefault("evidence", {})
        if case.id not in batch:
            batch[case.id] = case_evidence(case)
        return batch[case.id]

    def get_enrichment(self, case: Case) -> dict:
        evidence = self._evidence(case)
        return {
            "model": evidence["model"],
            "steps": [
                {k: s[k] for k in ("name", "state", "detail")} for s in evidence["enrichment_steps"]
            ],
            "heatmaps": [
                {
                    "image": img.external_id,
                    "policy": hm.policy,
                    "model_version": hm.model_version,
                    "probability": hm.probability,
                    "peak": [hm.peak_x, hm.peak_y],
                    "empty": hm.empty,
                }
                for img in evidence["images"]
                for hm in img.heatmaps_for_case
            ],
            "neighbours": {
                "index_version": evidence["neighbours_index_version"],
                "items": [
                    {
                        k: n[k]
                        for k in (
                            "title",
                            "policy",
                            "decision",
                            "decided_at",
                            "similarity",
                            "case_id",
                            "source",
                            "overturned",
                        )
                    }
                    for n in evidence["neighbours"]
                ],
            },
            "hash_matches": [
                {
                    **{k: m[k] for k in ("kind", "policy", "distance", "detail", "source")},
                    "withdrawn": m["withdrawn"],
                    "original": (
                        {
                            k: m["original"][k]
                            for k in ("decision_id", "case_id", "policy", "action", "decided_at")
                        }
                        if m["original"]
                        else None
                    ),
                }
                for m in evidence["hash_matches"]
            ],
        }

    def get_verdicts(self, case: Case) -> dict:
        v = self._evidence(case)["llm_verdict"]
        llm = {"state": case.llm_state, "label": case.get_llm_state_display()}
        if v is not None:
            llm["verdict"] = {
                "id": v.id,
                "status": v.status,
                "decision": v.decision,
                "policy": v.policy or None,
                "confidence": v.confidence,
                "rationale": v.rationale,
                "evidence": v.evidence,
                "recommended_action": v.recommended_action,
                "model": v.model,
                "prompt_version": v.prompt_version,
                "latency_ms": v.latency_ms,
                "prompt_tokens": v.prompt_tokens,
                "completion_tokens": v.completion_tokens,
                "estimated_cost": v.estimated_cost,
                "error": v.error,
                "created_at": v.created_at,
            }
        return {"llm": llm}

    def get_decisions(self, case: Case) -> list[dict]:
        return DecisionOutput(case.decisions.all(), many=True).data


class DecisionInput(serializers.Serializer):
    verdict = serializers.ChoiceField(choices=Decision.Verdict.choices)
    policy = serializers.ChoiceField(
        choices=[(c, c) for c in POLICY_CODES], required=False, allow_null=True
    )
    action = serializers.ChoiceField(choices=Decision.Action.choices)
    notes = serializers.CharField(
        required=False, allow_blank=True, max_length=MAX_NOTES, default=""
    )
    time_on_case_ms = serializers.IntegerField(
        required=False, allow_null=True, min_value=0, max_value=86_400_000
    )

    def validate(self, attrs):
        problems = decision_problems(
            verdict=attrs["verdict"],
            policy=attrs.get("policy"),
            action=attrs["action"],
            notes=attrs.get("notes", ""),
        )
        if problems:
            raise serializers.ValidationError(problems)
        attrs["policy"] = normalised_policy(verdict=attrs["verdict"], policy=attrs.get("policy"))
        return attrs


class ClaimInput(serializers.Serializer):
    queue = serializers.SlugField(required=False, max_length=64)
