from django.urls import path

from active_learning.labeling import apis as labeling_apis
from active_learning.labeling import views as labeling_views

app_name = "active_learning"

urlpatterns = [
    path("labeling/", labeling_views.labeling_page, name="labeling"),
    path("labeling/claim/", labeling_views.labeling_claim, name="labeling_claim"),
    path("labeling/<int:item_id>/", labeling_views.labeling_item, name="labeling_item"),
    path("labeling/<int:item_id>/answer/", labeling_views.labeling_answer, name="labeling_answer"),
    path("labeling/<int:item_id>/skip/", labeling_views.labeling_skip, name="labeling_skip"),
]

api_urlpatterns = [
    path(
        "labeling/claim-next/",
        labeling_apis.LabelingClaimNextApi.as_view(),
        name="api-labeling-claim-next",
    ),
    path(
        "labeling/<int:item_id>/answer/",
        labeling_apis.LabelingAnswerApi.as_view(),
        name="api-labeling-answer",
    ),
]
