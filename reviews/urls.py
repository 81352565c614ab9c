from django.urls import path

from reviews.appeals import apis as appeal_apis
from reviews.appeals import views as appeal_views
from reviews.cases import apis, views
from reviews.cases.consumers import CaseConsumer, QueuesConsumer
from reviews.enforcement import apis as enforcement_apis
from reviews.enforcement import views as enforcement_views
from reviews.monitoring import views as monitoring_views
from reviews.policies import model_views
from reviews.policies import views as ladder_views
from reviews.qa import views as qa_views

app_name = "reviews"

urlpatterns = [
    path("", views.home, name="home"),
    path("queues/", views.queues, name="queues"),
    path("queues/fragment/", views.queues_fragment, name="queues_fragment"),
    path("queues/<slug:slug>/", views.queue_detail, name="queue"),
    path("queues/<slug:slug>/fragment/", views.queue_detail_fragment, name="queue_fragment"),
    path("queues/<slug:slug>/claim/", views.claim_next, name="claim_next"),
    path("cases/<int:case_id>/", views.case_page, name="case"),
    path("cases/<int:case_id>/evidence/", views.case_evidence_fragment, name="case_evidence"),
    path("cases/<int:case_id>/status/", views.case_status_fragment, name="case_status"),
    path("cases/<int:case_id>/decide/", views.case_decide, name="case_decide"),
    path("cases/<int:case_id>/release/", views.case_release, name="case_release"),
    path("cases/<int:case_id>/skip/", views.case_skip, name="case_skip"),
    path("cases/<int:case_id>/escalate/", views.case_escalate, name="case_escalate"),
    path("images/<int:image_id>/", views.listing_image, name="listing_image"),
    path("heatmaps/<int:heatmap_id>/", views.heatmap_overlay, name="heatmap_overlay"),
    path("references/<int:reference_id>/image/", views.reference_image, name="reference_image"),
    path("preferences/", views.preferences, name="preferences"),
    path("sellers/<int:seller_id>/", appeal_views.seller_page, name="seller"),
    path("sellers/<int:seller_id>/bulk/", views.seller_bulk, name="seller_bulk"),
    path("qa/", qa_views.qa_page, name="qa"),
    path("qa/claim/", qa_views.qa_claim, name="qa_claim"),
    path("qa/samples/<int:sample_id>/", qa_views.qa_sample, name="qa_sample"),
    path("dashboard/", monitoring_views.dashboard_page, name="dashboard"),
    path("appeals/", appeal_views.appeals_page, name="appeals"),
    path("appeals/claim/", appeal_views.appeal_claim, name="appeal_claim"),
    path("appeals/<int:appeal_id>/", appeal_views.appeal_page, name="appeal"),
    path("appeals/<int:appeal_id>/decide/", appeal_views.appeal_decide, name="appeal_decide"),
    path("appeals/<int:appeal_id>/release/", appeal_views.appeal_release, name="appeal_release"),
    path("enforcement/", enforcement_views.enforcement_page, name="enforcement"),
    path(
        "enforcement/redeliver/",
        enforcement_views.enforcement_redeliver,
        name="enforcement_redeliver",
    ),
    path(
        "enforcement/endpoint/enable/",
        enforcement_views.enforcement_endpoint_enable,
        name="enforcement_endpoint_enable",
    ),
    path(
        "enforcement/statements/resubmit/",
        enforcement_views.statements_resubmit,
        name="statements_resubmit",
    ),
    path("ladder/", ladder_views.ladder_page, name="ladder"),
    path("ladder/draft/start/", ladder_views.ladder_draft_start, name="ladder_draft_start"),
    path("ladder/draft/", ladder_views.ladder_draft_save, name="ladder_draft_save"),
    path(
        "ladder/draft/statements/",
        ladder_views.ladder_statements_save,
        name="ladder_statements_save",
    ),
    path("ladder/draft/repeat/", ladder_views.ladder_repeat_save, name="ladder_repeat_save"),
    path("ladder/draft/discard/", ladder_views.ladder_draft_discard, name="ladder_draft_discard"),
    path("ladder/draft/export.yaml", ladder_views.ladder_draft_export, name="ladder_draft_export"),
    path("ladder/publish/", ladder_views.ladder_publish, name="ladder_publish"),
    path("ladder/import/", ladder_views.ladder_import, name="ladder_import"),
    path("ladder/versions/<int:number>/", ladder_views.ladder_version, name="ladder_version"),
    path(
        "ladder/versions/<int:number>/export.yaml", ladder_views.ladder_export, name="ladder_export"
    ),
    path(
        "ladder/versions/<int:number>/activate/",
        ladder_views.ladder_activate,
        name="ladder_activate",
    ),
    path("models/", model_views.models_page, name="models"),
]

api_urlpatterns = [
    path("models/compare/", model_views.ModelCompareApi.as_view(), name="api-models-compare"),
    path("cases/", apis.CaseListApi.as_view(), name="api-cases"),
    path("cases/claim-next/", apis.CaseClaimNextApi.as_view(), name="api-claim-next"),
    path("cases/<int:case_id>/", apis.CaseDetailApi.as_view(), name="api-case"),
    path("cases/<int:case_id>/decision/", apis.CaseDecisionApi.as_view(), name="api-decision"),
    path("cases/<int:case_id>/release/", apis.CaseReleaseApi.as_view(), name="api-release"),
    path("cases/<int:case_id>/heartbeat/", apis.CaseHeartbeatApi.as_view(), name="api-heartbeat"),
    path("cases/<int:case_id>/skip/", apis.CaseSkipApi.as_view(), name="api-skip"),
    path("cases/<int:case_id>/escalate/", apis.CaseEscalateApi.as_view(), name="api-escalate"),
    path(
        "decisions/<int:decision_id>/statement-of-reasons/",
        enforcement_apis.StatementOfReasonsApi.as_view(),
        name="api-statement-of-reasons",
    ),
    path("enforcement/", enforcement_apis.EnforcementStatusApi.as_view(), name="api-enforcement"),
    path("appeals/", appeal_apis.AppealCreateApi.as_view(), name="api-appeals"),
    path(
        "appeals/claim-next/",
        appeal_apis.AppealClaimNextApi.as_view(),
        name="api-appeal-claim-next",
    ),
    path("appeals/<int:appeal_id>/", appeal_apis.AppealDetailApi.as_view(), name="api-appeal"),
    path(
        "sellers/<str:seller_id>/strikes/",
        appeal_apis.SellerStrikesApi.as_view(),
        name="api-seller-strikes",
    ),
    path(
        "appeals/<int:appeal_id>/decision/",
        appeal_apis.AppealDecisionApi.as_view(),
        name="api-appeal-decision",
    ),
    path(
        "enforcement/redeliver/",
        enforcement_apis.EnforcementRedeliverApi.as_view(),
        name="api-enforcement-redeliver",
    ),
]

websocket_urlpatterns = [
    path("ws/queues/", QueuesConsumer.as_asgi()),
    path("ws/cases/<int:case_id>/", CaseConsumer.as_asgi()),
]
