from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from active_learning.urls import api_urlpatterns as active_learning_api_urlpatterns
from detection.intake.apis import DetectionEventSchemaApi
from moderation_portal.core.access import ALL_ROLES, role_permission
from moderation_portal.core.login_throttle import ThrottledLoginView
from moderation_portal.core.metrics_view import metrics_view
from moderation_portal.health import healthz, readyz
from reviews.cases.intake import DetectionIngestApi
from reviews.cases.views import logout_view
from reviews.urls import api_urlpatterns

api_v1 = [
    path("detections/", DetectionIngestApi.as_view(), name="api-detections"),
    path("schema/detection-event.json", DetectionEventSchemaApi.as_view(), name="api-event-schema"),
    path(
        "schema/",
        SpectacularAPIView.as_view(
            permission_classes=[role_permission(*ALL_ROLES)],
            # every operation's refusals, in the one error shape (core/openapi.py)
            custom_settings={
                "POSTPROCESSING_HOOKS": [
                    "drf_spectacular.hooks.postprocess_schema_enums",
                    "moderation_portal.core.openapi.document_refusals",
                ]
            },
        ),
        name="api-schema",
    ),
    *api_urlpatterns,
    *active_learning_api_urlpatterns,
]

# 503 where the database is unreachable or the pool exhausted; the API's 500s in its error shape.
handler500 = "moderation_portal.core.unavailable.server_error"
# Unknown API paths answer 404 in the error shape too; pages keep Django's page.
handler404 = "moderation_portal.core.api.not_found"

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),  # loopback or METRICS_TOKEN
    # failed logins throttled per account and address (core/login_throttle.py)
    path("login/", ThrottledLoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", logout_view, name="logout"),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("", include("reviews.urls")),
    path("", include("active_learning.urls")),
]
