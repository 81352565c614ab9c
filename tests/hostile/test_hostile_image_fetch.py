"""Image URLs on an allow-listed host that redirect elsewhere: the portal follows a redirect
only to an https URL on the allow-list, checked again at every hop, so an allowed host cannot
hand it on to this machine, the cloud metadata address or another scheme. A real HTTPS server
plays the allowed host; a second local server, which must receive nothing, stands for the
private address. The image fails with a clear reason and its case stays reviewable."""

import hashlib

import pytest

from detection.intake.fetch import images_fetch_pending
from detection.models import ListingImage
from reviews.cases.intake import detections_ingest
from reviews.models import Case
from tests import factories as f
from tests.detection.test_image_fetch import https_serving
from tests.hostile import corpus

REFUSED_REDIRECT = "redirect to a host that is not allowed"
REFUSED_SCHEME = "redirect not followed (HTTP 302)"


@pytest.mark.django_db
def test_redirects_off_the_allow_list_are_never_followed(trap, settings, tmp_path):
    trap_port, trap_seen = trap
    photo = f.png_bytes((10, 200, 30), size=(80, 60))
    seen: list[str] = []
    routes: dict = {"/photo.png": (200, {"Content-Type": "image/png"}, photo)}
    allowed = https_serving(routes, seen, tmp_path)
    base = f"https://localhost:{allowed.server_address[1]}"
    targets = {
        "http_loopback": f"http://127.0.0.1:{trap_port}/a.png",
        "https_loopback": f"https://127.0.0.1:{trap_port}/b.png",
        "ipv6_loopback": f"https://[::1]:{trap_port}/c.png",
        "hex_ip": f"https://0x7f000001:{trap_port}/d.png",
        "metadata": "https://169.254.169.254/latest/meta-data/",
        "file": "file:///etc/passwd",
        "gopher": f"gopher://127.0.0.1:{trap_port}/_GET",
        "second_hop": f"{base}/hop-2",  # allowed, and it redirects to the trap
        "bomb": f"{base}/bomb.png",  # allowed, and it serves a pixel bomb
        "within_the_allow_list": f"{base}/photo.png",
    }
    for name, target in targets.items():
        routes[f"/{name}"] = (302, {"Location": target}, b"")
    routes["/hop-2"] = (301, {"Location": f"http://127.0.0.1:{trap_port}/e.png"}, b"")
    bomb = corpus.png_declaring(100_000, 100_000)
    routes["/bomb.png"] = (200, {"Content-Type": "image/png"}, bomb)
    settings.IMAGE_HOST_ALLOWLIST = ["localhost"]
    settings.IMAGE_FETCH_CA_FILE = str(allowed.cert_path)
    images = [
        {
            "id": name,
            "url": f"{base}/{name}",
            "sha256": hashlib.sha256(bomb if name == "bomb" else photo).hexdigest(),
        }
        for name in targets
    ]
    try:
        (outcome,) = detections_ingest(
            events=[f.event(images=images, listing="redirecting")], source="api"
        )
        assert outcome.status == "accepted"
        case = Case.objects.get(listing__external_id="redirecting")
        assert images_fetch_pending(listing_id=case.listing_id) == 1
    finally:
        allowed.shutdown()
        allowed.server_close()

    state = {i.external_id: (i.state, i.error) for i in ListingImage.objects.all()}
    assert state.pop("within_the_allow_list") == ("stored", "")
    assert state.pop("bomb") == ("fetch_failed", "declares more pixels than the limit")
    # urllib itself refuses a redirect to another scheme; the allow-list refuses the rest
    assert state.pop("file") == state.pop("gopher") == ("fetch_failed", REFUSED_SCHEME)
    for name, (image_state, error) in state.items():
        assert image_state == "fetch_failed", name
        assert error.startswith(REFUSED_REDIRECT), (name, error)
    assert trap_seen == []  # nothing reached the private address
    # the allowed host saw each first hop, the second hop, the bomb and the photo: no more
    assert sorted(seen) == sorted(
        [f"/{name}" for name in targets] + ["/hop-2", "/bomb.png", "/photo.png"]
    )
    # the case is there to review, whatever happened to its images
    assert Case.objects.filter(id=case.id, state=Case.State.QUEUED).exists()
