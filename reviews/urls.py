from django.urls import path

from reviews import apis, views

app_name = "reviews"

urlpatterns = [
    path("", views.home, name="home"),
    path("queues/", views.queues, name="queues"),
    path("queues/fragment/", views.queues_fragment, name="queues_fragment"),
    path("queues/<slug:slug>/claim/", views.claim_next, name="claim_next"),
    path("cases/<int:case_id>/", views.case_page, name="case"),
    path("cases/<int:case_id>/decide/", views.case_decide, name="case_decide"),
    path("cases/<int:case_id>/release/", views.case_release, name="case_release"),
    path("images/<int:image_id>/", views.listing_image, name="listing_image"),
]

api_urlpatterns = [
    path("cases/", apis.CaseListApi.as_view(), name="api-cases"),
    path("cases/claim-next/", apis.CaseClaimNextApi.as_view(), name="api-claim-next"),
    path("cases/<int:case_id>/", apis.CaseDetailApi.as_view(), name="api-case"),
    path("cases/<int:case_id>/decision/", apis.CaseDecisionApi.as_view(), name="api-decision"),
    path("cases/<int:case_id>/release/", apis.CaseReleaseApi.as_view(), name="api-release"),
]
