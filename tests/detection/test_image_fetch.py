"""Fetching listing images from URLs, against a real HTTPS server on this machine."""

import datetime
import hashlib
import http.server
import ssl
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from detection.intake.fetch import images_fetch_pending
from detection.models import ListingImage
from reviews.cases.intake import detections_ingest
from tests import factories as f


def _self_signed(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def https_serving(routes: dict, seen: list, tmp_path) -> http.server.ThreadingHTTPServer:
    """An HTTPS server on 127.0.0.1 (certificate for `localhost`, its file at `.cert_path`)
    answering GET `path` with `routes[path]` = (status, headers, body), else 404; the paths
    asked for are appended to `seen`."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.path)
            status, headers, body = routes.get(self.path, (404, {}, b""))
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    cert, key = _self_signed(tmp_path)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()
    server.cert_path = cert  # type: ignore[attr-defined]
    return server


@pytest.fixture
def image_host(tmp_path, settings):
    photo = f.png_bytes((10, 200, 30), size=(80, 60))
    routes = {
        "/photo.png": (200, {"Content-Type": "image/png"}, photo),
        "/big.png": (200, {"Content-Type": "image/png"}, b"\0" * 5000),
        "/not-an-image.png": (200, {"Content-Type": "image/png"}, b"<html>nope</html>"),
        "/gone.png": (404, {}, b""),
        "/elsewhere.png": (302, {"Location": "https://evil.example.net/x.png"}, b""),
    }
    seen: list[str] = []
    server = https_serving(routes, seen, tmp_path)
    cert = server.cert_path
    settings.IMAGE_HOST_ALLOWLIST = ["localhost"]
    settings.IMAGE_FETCH_CA_FILE = str(cert)
    settings.INGEST_MAX_IMAGE_BYTES = 4096
    yield f"https://localhost:{server.server_address[1]}", photo, seen
    server.shutdown()


@pytest.mark.django_db
def test_url_images_are_fetched_checked_and_stored(image_host):
    base, photo, seen = image_host
    sha = hashlib.sha256(photo).hexdigest()
    images = [
        {"id": "ok", "url": f"{base}/photo.png", "sha256": sha},
        {"id": "big", "url": f"{base}/big.png", "sha256": "0" * 64},
        {
            "id": "html",
            "url": f"{base}/not-an-image.png",
            "sha256": hashlib.sha256(b"<html>nope</html>").hexdigest(),
        },
        {"id": "gone", "url": f"{base}/gone.png", "sha256": "0" * 64},
        {"id": "redirect", "url": f"{base}/elsewhere.png", "sha256": "0" * 64},
        {"id": "swapped", "url": f"{base}/photo.png", "sha256": "1" * 64},
    ]
    (outcome,) = detections_ingest(
        events=[f.event(images=images, listing="url-listing")], source="api"
    )
    assert outcome.status == "accepted"
    assert set(ListingImage.objects.values_list("state", flat=True)) == {"pending_fetch"}
    assert images_fetch_pending(listing_id=ListingImage.objects.first().listing_id) == 1
    state = {i.external_id: (i.state, i.error) for i in ListingImage.objects.all()}
    assert state["ok"][0] == "stored"
    stored = ListingImage.objects.get(external_id="ok")
    assert stored.content.read() == photo
    assert (stored.width, stored.height) == (80, 60)
    assert state["big"] == ("fetch_failed", "the image is 5000 bytes; the limit is 4096")
    assert state["html"] == ("fetch_failed", "not a readable image")
    assert state["gone"] == ("fetch_failed", "HTTP 404")
    assert state["redirect"][0] == "fetch_failed"
    assert "not allowed" in state["redirect"][1]
    assert state["swapped"] == ("fetch_failed", "the fetched bytes do not match the event's sha256")
    assert not any("evil" in path for path in seen)


def test_hosts_off_the_allow_list_are_never_contacted(settings):
    from detection.intake.fetch import FetchError, fetch_bytes

    settings.IMAGE_HOST_ALLOWLIST = ["images.marketplace.example"]
    for url in [
        "https://127.0.0.1/x.png",
        "http://images.marketplace.example/x.png",
        "https://evil.example.net/x.png",
    ]:
        with pytest.raises(FetchError) as err:
            fetch_bytes(url)
        assert err.value.permanent
