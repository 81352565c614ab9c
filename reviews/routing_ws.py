from django.urls import path

from reviews.consumers import CaseConsumer, QueuesConsumer

websocket_urlpatterns = [
    path("ws/queues/", QueuesConsumer.as_asgi()),
    path("ws/cases/<int:case_id>/", CaseConsumer.as_asgi()),
]
