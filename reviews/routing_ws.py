from django.urls import path

from reviews.consumers import QueuesConsumer

websocket_urlpatterns = [
    path("ws/queues/", QueuesConsumer.as_asgi()),
]
