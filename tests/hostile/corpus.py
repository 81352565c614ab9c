"""Hostile input the portal is sent by people it does not trust: listing text written by sellers,
seller statements in appeals, an LLM's answers, images and image URLs.

Each entry is named, so a failing test names the input that got through.
"""

import base64
import hashlib
import io
import re
import struct
import zlib

from PIL import Image

# --- text: listings, statements, LLM output ---------------------------------------------------

SCRIPT = "<script>alert('listing')</script>"
IMG_ONERROR = '<img src=x onerror="alert(1)">'
STYLE = '<style>body{display:none}</style><div style="position:fixed;inset:0">cover</div>'
ATTRIBUTE_BREAK = '" autofocus onfocus="alert(1)'
JS_URL = '<a href="javascript:alert(1)">open</a>'
CLOSE_TEXTAREA = "</textarea></pre><script>alert(2)</script>"
DJANGO_VAR = "{{ request.user.password }}{{ 7|add:7 }}"
DJANGO_TAG = "{% load static %}{% debug %}{% csrf_token %}"
JS_TEMPLATE = "${alert(3)} `${7*7}`"
JINJA = "{{ ''.__class__.__mro__ }}"
RLO = "Pistol \u202egnp.exe\u202c for sale"  # right-to-left override, then pop
BIDI_ISOLATES = "\u2067price\u2069 \u2066\u2068cash\u2069"
ZERO_WIDTH = "g\u200bu\u200cn\u200d f\u2060o\ufeffr sale"
ASTRAL = "\U0001f52b\U0001f4a3 \U0001d4c5\U0001d4be\U0001d4c8\U0001d4c9\U0001d45c\U0001d4c1"
ZALGO = "gun" + "\u0301\u0336\u0489" * 1000  # a flood of combining marks
NUL = "Pistol\x00 for sale"
LONE_SURROGATE = "cash \ud800 only"

# Text that is stored as it came and must be shown inert wherever it appears.
INERT_TEXT = {
    "script": SCRIPT,
    "img_onerror": IMG_ONERROR,
    "style": STYLE,
    "attribute_break": ATTRIBUTE_BREAK,
    "javascript_url": JS_URL,
    "close_textarea": CLOSE_TEXTAREA,
    "django_variable": DJANGO_VAR,
    "django_tag": DJANGO_TAG,
    "js_template": JS_TEMPLATE,
    "jinja": JINJA,
    "right_to_left_override": RLO,
    "bidi_isolates": BIDI_ISOLATES,
    "zero_width": ZERO_WIDTH,
    "astral": ASTRAL,
    "combining_flood": ZALGO,
}
# Text the database cannot hold (PostgreSQL refuses NUL; psycopg cannot encode a surrogate).
UNSTORABLE_TEXT = {"nul": NUL, "lone_surrogate": LONE_SURROGATE}

# What must never appear in a page built from the text: markup the text would have added.
MARKUP = [
    "<script>alert",
    "<img src=x",
    "<style>body",
    'onfocus="alert',
    '<a href="javascript:',
    "</textarea></pre><script>",
]
# The invisible characters above: pages show each as a visible "U+XXXX" marker instead.
INVISIBLE = "\u202e\u202c\u2066\u2067\u2068\u2069\u200b\u200c\u200d\u2060\ufeff"
_MARKER = re.compile(r'<span class="hidden-char" title="[a-z0-9 -]+">U\+([0-9A-F]{4})</span>')


def shown(html: str, pattern: str) -> str:
    """The text a page shows in the element `pattern` (a regex with one group) finds, with
    each visible marker turned back into its character; fails if an invisible character is
    there as itself."""
    match = re.search(pattern, html, re.DOTALL)
    assert match, pattern
    fragment = match.group(1)
    hidden = [char for char in fragment if char in INVISIBLE]
    assert not hidden, f"shown invisibly: {hidden}"
    return _MARKER.sub(lambda m: chr(int(m.group(1), 16)), fragment)


# --- images ----------------------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int) -> bytes:
    """A small, well-formed PNG whose header declares `width` x `height` pixels: decoding it
    would need width * height * 3 bytes (a decompression bomb)."""
    rows = zlib.compress(b"\0" * (width * 3 + 1) * 4, 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + _png_chunk(b"IDAT", rows)
        + _png_chunk(b"IEND", b"")
    )


def _encoded(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


_PNG = _encoded(Image.new("RGB", (64, 48), (200, 30, 30)), "PNG")
_JPEG = _encoded(Image.new("RGB", (64, 48), (30, 200, 30)), "JPEG")

# name -> (bytes, the reason code validation gives)
BAD_IMAGES = {
    "truncated_png": (_PNG[: len(_PNG) // 2], "not_an_image"),
    "truncated_jpeg": (_JPEG[: len(_JPEG) // 2], "not_an_image"),
    "png_header_only": (_PNG[:33], "not_an_image"),
    "html_as_image": (b"<html><script>alert(1)</script></html>", "not_an_image"),
    "svg_with_script": (
        b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
        "not_an_image",
    ),
    "wrong_magic": (b"GIF89a" + _PNG[6:], "not_an_image"),
    "empty": (b"", "not_an_image"),
    "bomb_over_the_limit": (png_declaring(8000, 8000), "image_too_large"),
    "bomb_pillow_refuses": (png_declaring(100_000, 100_000), "image_too_large"),
}


def inline(image_id: str, data: bytes) -> dict:
    return {
        "id": image_id,
        "data": base64.b64encode(data).decode(),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


# name -> (the image entry's `data`, reason code)
BAD_BASE64 = {
    "not_base64": ("!!!<script>", "bad_base64"),
    "missing_padding": ("aGVsbG8", "bad_base64"),
    "embedded_newlines": ("aGVs\nbG8=", "bad_base64"),
    "data_url": ("data:image/png;base64," + base64.b64encode(_PNG).decode(), "bad_base64"),
}

# --- image URLs that must never be fetched -----------------------------------------------------


def ssrf_urls(port: int) -> dict[str, tuple[str, str]]:
    """name -> (URL, reason code): addresses of this machine, its cloud metadata service and
    other schemes, spelled the ways that slip past naive checks. `port` is a local server that
    counts every request it receives."""
    return {
        "http_loopback": (f"http://127.0.0.1:{port}/x.png", "bad_format"),
        "https_loopback": (f"https://127.0.0.1:{port}/x.png", "host_not_allowed"),
        "metadata": ("https://169.254.169.254/latest/meta-data/", "host_not_allowed"),
        "ipv6_loopback": (f"https://[::1]:{port}/x.png", "host_not_allowed"),
        "hex_ip": (f"https://0x7f000001:{port}/x.png", "host_not_allowed"),
        "decimal_ip": (f"https://2130706433:{port}/x.png", "host_not_allowed"),
        "localhost": (f"https://localhost:{port}/x.png", "host_not_allowed"),
        "file": ("file:///etc/passwd", "bad_format"),
        "gopher": (f"gopher://127.0.0.1:{port}/_GET", "bad_format"),
        "userinfo_trick": (
            f"https://images.marketplace.example@127.0.0.1:{port}/x.png",
            "bad_url",
        ),
        "fragment_trick": (
            f"https://127.0.0.1:{port}/x.png#@images.marketplace.example",
            "host_not_allowed",
        ),
        "suffix_trick": (
            f"https://images.marketplace.example.127.0.0.1.nip.io:{port}/x.png",
            "host_not_allowed",
        ),
    }
