"""Fetching listing images from URLs: only https, only allow-listed hosts (checked again on
every redirect), explicit timeouts, and a size limit read as the bytes arrive."""

import hashlib
import io
import logging
import ssl
import urllib.error
import urllib.request

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image, UnidentifiedImageError

from detection.intake.validation import ALLOWED_IMAGE_FORMATS, host_is_allowed
from detection.models import ListingImage

logger = logging.getLogger(__name__)


class FetchError(Exception):
    def __init__(self, message: str, *, permanent: bool):
        super().__init__(message)
        self.permanent = permanent


class _AllowListRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if not newurl.startswith("https://") or not host_is_allowed(newurl):
            raise FetchError(
                f"redirect to a host that is not allowed: {newurl[:200]}", permanent=True
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _context() -> ssl.SSLContext:
    ca = getattr(settings, "IMAGE_FETCH_CA_FILE", None)
    return ssl.create_default_context(cafile=ca) if ca else ssl.create_default_context()


def fetch_bytes(url: str) -> bytes:
    if not url.startswith("https://") or not host_is_allowed(url):
        raise FetchError("the URL's host is not on the image allow-list", permanent=True)
    opener = urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=_context()), _AllowListRedirects
    )
    request = urllib.request.Request(
        url, headers={"User-Agent": "moderation-portal/1", "Accept": "image/*"}
    )
    limit = settings.INGEST_MAX_IMAGE_BYTES
    try:
        with opener.open(
            request,
            timeout=settings.IMAGE_FETCH_CONNECT_TIMEOUT + settings.IMAGE_FETCH_READ_TIMEOUT,
        ) as resp:
            declared = resp.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > limit:
                raise FetchError(
                    f"the image is {declared} bytes; the limit is {limit}", permanent=True
                )
            data = resp.read(limit + 1)
    except FetchError:
        raise
    except urllib.error.HTTPError as exc:
        if 300 <= exc.code < 400:  # a redirect urllib will not follow: another scheme, a loop
            raise FetchError(f"redirect not followed (HTTP {exc.code})", permanent=True) from exc
        raise FetchError(f"HTTP {exc.code}", permanent=exc.code < 500 and exc.code != 429) from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise FetchError(
            f"could not fetch: {getattr(exc, 'reason', exc)}", permanent=False
        ) from exc
    if len(data) > limit:
        raise FetchError(f"the image is over {limit} bytes", permanent=True)
    return data


def images_fetch_pending(*, listing_id: int) -> int:
    """Fetch the listing's URL images that are not stored yet. Returns how many were stored."""
    stored = 0
    for image in ListingImage.objects.filter(
        listing_id=listing_id, state=ListingImage.State.PENDING_FETCH
    ):
        try:
            data = fetch_bytes(image.source_url)
            if hashlib.sha256(data).hexdigest() != image.sha256:
                raise FetchError(
                    "the fetched bytes do not match the event's sha256", permanent=True
                )
            with Image.open(io.BytesIO(data)) as pil:
                fmt, (width, height) = pil.format, pil.size
                if width * height > settings.INGEST_MAX_IMAGE_PIXELS:
                    raise FetchError(f"{width}x{height} pixels is over the limit", permanent=True)
                pil.verify()
            if fmt not in ALLOWED_IMAGE_FORMATS:
                raise FetchError(f"format {fmt} is not accepted", permanent=True)
        except Image.DecompressionBombError:  # Pillow refuses to open it at all: a pixel bomb
            ListingImage.objects.filter(id=image.id).update(
                state=ListingImage.State.FETCH_FAILED, error="declares more pixels than the limit"
            )
            continue
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            ListingImage.objects.filter(id=image.id).update(
                state=ListingImage.State.FETCH_FAILED, error="not a readable image"
            )
            continue
        except FetchError as exc:
            if exc.permanent:
                ListingImage.objects.filter(id=image.id).update(
                    state=ListingImage.State.FETCH_FAILED, error=str(exc)[:500]
                )
                continue
            raise
        ctype = ALLOWED_IMAGE_FORMATS[fmt]
        name = default_storage.save(
            f"images/{image.sha256[:2]}/{image.sha256}.{ctype.split('/')[-1]}", ContentFile(data)
        )
        ListingImage.objects.filter(id=image.id, state=ListingImage.State.PENDING_FETCH).update(
            state=ListingImage.State.STORED,
            content=name,
            content_type=ctype,
            width=width,
            height=height,
            byte_size=len(data),
            error="",
        )
        stored += 1
    return stored
