"""Exact (sha256) and near-duplicate (64-bit pHash) matching against known-bad images.

pHash (imagehash.phash, 8×8 DCT of a 32×32 greyscale thumbnail, one bit per coefficient
above the median) survives resizing, re-compression and small crops, and changes a lot
between different pictures. Two images are "near duplicates" when the Hamming distance of
their hashes is at most `PHASH_MATCH_THRESHOLD`.

Plain pHash is not robust to cropping: a 5 % crop per side moves the content by 5 % of the
frame and flips 10-18 of 64 bits, as many as separate some *different* images. So a known-bad
image is stored with a few hashes (`reference_hashes`): the whole picture, centre crops of
2.5 % and 5 % per side, and four corner-anchored 4 % crops (a crop taken from one side).
A query is hashed once and matches when its distance to the nearest of those is within the
threshold.

How the threshold was chosen (``python -m detection.ml.phash`` repeats the measurement on
200 structured synthetic photos; figures from that run):
- copies (resized to 50 % or 75 %, JPEG quality 40, cropped 3 % or 5 % per side, cropped 5 %
  from one side or one corner, and resize + 4 % crop + JPEG q40 together) were at most 8 from
  the nearest reference hash, and at most 6 for 95 % of them;
- different images were at least 12 from every reference hash of another image, 20 or more
  for 99 % of pairs, with a median of 28 (random 64-bit strings would give 32);
- 10 sits in that gap with two bits either side, and is in the range pHash users commonly
  pick (8-12 of 64). Raise it and plain scenes start to collide; lower it and combined edits
  stop matching.

Hashes are unsigned 64-bit integers here; `to_signed64` / `from_signed64` convert for
databases whose 64-bit integer column is signed.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image

PHASH_BITS = 64
PHASH_MATCH_THRESHOLD = 10


@dataclass(frozen=True)
class Fingerprint:
    sha256: str
    phash: int  # unsigned 64-bit

    @property
    def phash_hex(self) -> str:
        return f"{self.phash:016x}"


def _corner_crop(image: Image.Image, fraction: float, corner: str) -> Image.Image:
    w, h = image.size
    dx, dy = round(w * fraction), round(h * fraction)
    box = {
        "tl": (dx, dy, w, h),
        "tr": (0, dy, w - dx, h),
        "bl": (dx, 0, w, h - dy),
        "br": (0, 0, w - dx, h - dy),
    }[corner]
    return image.crop(box)


def reference_hashes(image: Image.Image) -> list[int]:
    """The pHashes stored for a known-bad image: whole, centre-cropped and corner-cropped.

    The first is the image's own pHash."""
    image = image.convert("RGB")
    views = [image, crop_fraction(image, 0.025), crop_fraction(image, 0.05)]
    views += [_corner_crop(image, 0.04, corner) for corner in ("tl", "tr", "bl", "br")]
    return [phash(view) for view in views]


@dataclass(frozen=True)
class HashMatch:
    ref_id: object
    kind: str  # "exact" (same bytes) or "near" (pHash within the threshold)
    distance: int  # Hamming distance of the pHashes (0 for exact)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def phash(image: Image.Image) -> int:
    import imagehash

    bits = imagehash.phash(image.convert("RGB"), hash_size=8).hash.flatten()
    value = 0
    for bit in bits:
        value = (value << 1) | int(bool(bit))
    return value


def fingerprint_bytes(data: bytes) -> Fingerprint:
    """sha256 of the bytes as received, pHash of the decoded picture."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return Fingerprint(sha256=sha256_hex(data), phash=phash(image))


def fingerprint_image(image: Image.Image, data: bytes | None = None) -> Fingerprint:
    if data is None:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="PNG")
        data = buffer.getvalue()
    return Fingerprint(sha256=sha256_hex(data), phash=phash(image))


def hamming(a: int, b: int) -> int:
    return int((a ^ b).bit_count())


def to_signed64(value: int) -> int:
    return value - (1 << 64) if value >= (1 << 63) else value


def from_signed64(value: int) -> int:
    return value + (1 << 64) if value < 0 else value


class HashMatcher:
    """Known-bad images by sha256 and pHash(es); `match` finds exact and near duplicates.

    `entries` are (ref_id, sha256 hex, phash or sequence of phashes), the sequence normally
    being `reference_hashes(image)`. Vectorised: all hashes sit in one uint64 array, and a
    query's distances are one XOR and a popcount (numpy's bitwise_count) over it.
    """

    def __init__(self, entries: Iterable[tuple[object, str, int | Iterable[int]]] = ()):
        ids: list[object] = []
        owners: list[int] = []
        hashes: list[int] = []
        self._by_sha: dict[str, list[object]] = {}
        for ref_id, sha, value in entries:
            values = [value] if isinstance(value, (int, np.integer)) else list(value)
            for v in values:
                owners.append(len(ids))
                hashes.append(from_signed64(int(v)))
            ids.append(ref_id)
            if sha:
                self._by_sha.setdefault(sha.lower(), []).append(ref_id)
        self._ids = ids
        self._owners = np.array(owners, dtype=np.int64)
        self._hashes = np.array(hashes, dtype=np.uint64)

    def __len__(self) -> int:
        return len(self._ids)

    def distances(self, phash_value: int) -> np.ndarray:
        """Per reference image, the distance from `phash_value` to its nearest stored hash."""
        query = np.uint64(from_signed64(int(phash_value)))
        per_hash = np.bitwise_count(self._hashes ^ query).astype(np.int64)
        best = np.full(len(self._ids), PHASH_BITS + 1, dtype=np.int64)
        np.minimum.at(best, self._owners, per_hash)
        return best

    def match(
        self,
        fingerprint: Fingerprint,
        *,
        threshold: int = PHASH_MATCH_THRESHOLD,
        limit: int = 20,
    ) -> list[HashMatch]:
        """Exact matches first, then near matches by increasing distance."""
        found: list[HashMatch] = []
        exact_ids = self._by_sha.get(fingerprint.sha256.lower(), [])
        for ref_id in exact_ids:
            found.append(HashMatch(ref_id=ref_id, kind="exact", distance=0))
        if len(self._ids):
            d = self.distances(fingerprint.phash)
            close = np.flatnonzero(d <= threshold)
            exact_set = set(map(repr, exact_ids))
            for i in close[np.argsort(d[close], kind="stable")]:
                ref_id = self._ids[int(i)]
                if repr(ref_id) not in exact_set:
                    found.append(HashMatch(ref_id=ref_id, kind="near", distance=int(d[i])))
        return found[:limit]


# --------------------------------------------------------------------------------------------
# Measurement behind the threshold (python -m detection.ml.phash)


def structured_photo(seed: int, size: tuple[int, int] = (480, 360)) -> Image.Image:
    """A synthetic photo with structure at several scales: a lit gradient, overlapping shapes,
    fine texture and noise. Distinct seeds give distinct scenes."""
    from PIL import ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    c0, c1 = rng.uniform(30, 220, 3), rng.uniform(30, 220, 3)
    angle = rng.uniform(0, 2 * np.pi)
    t = ((xx * np.cos(angle) + yy * np.sin(angle)) / max(w, h) + 1) / 2
    base = c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]
    base += 12 * np.sin(xx * rng.uniform(0.05, 0.3) + yy * rng.uniform(0.05, 0.3))[..., None]
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(6, 12)):
        x0, y0 = rng.uniform(-0.1, 0.9) * w, rng.uniform(-0.1, 0.9) * h
        x1, y1 = x0 + rng.uniform(0.1, 0.5) * w, y0 + rng.uniform(0.1, 0.5) * h
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = rng.integers(3)
        if kind == 0:
            draw.ellipse([x0, y0, x1, y1], fill=colour)
        elif kind == 1:
            draw.rectangle([x0, y0, x1, y1], fill=colour)
        else:
            pts = [(rng.uniform(0, w), rng.uniform(0, h)) for _ in range(3)]
            draw.polygon(pts, fill=colour)
    img = img.filter(ImageFilter.GaussianBlur(1.2))
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, 6, (h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    out = Image.open(buffer)
    out.load()
    return out


def crop_fraction(image: Image.Image, fraction: float) -> Image.Image:
    w, h = image.size
    dx, dy = round(w * fraction), round(h * fraction)
    return image.crop((dx, dy, w - dx, h - dy))


def near_copies(image: Image.Image) -> dict[str, Image.Image]:
    w, h = image.size
    return {
        "resize_50": image.resize((w // 2, h // 2), Image.Resampling.BILINEAR),
        "resize_75": image.resize((w * 3 // 4, h * 3 // 4), Image.Resampling.BICUBIC),
        "jpeg_q40": jpeg(image, 40),
        "crop_3pct": crop_fraction(image, 0.03),
        "crop_5pct": crop_fraction(image, 0.05),
        "crop_left_5pct": image.crop((round(w * 0.05), 0, w, h)),
        "crop_corner_5pct": _corner_crop(image, 0.05, "br"),
        "resize_jpeg_crop": jpeg(crop_fraction(image.resize((w * 2 // 3, h * 2 // 3)), 0.04), 40),
    }


def measure(n: int = 200) -> dict[str, object]:
    originals = [structured_photo(seed) for seed in range(n)]
    matcher = HashMatcher((i, "", reference_hashes(im)) for i, im in enumerate(originals))
    same: dict[str, list[int]] = {}
    different: list[np.ndarray] = []
    for i, im in enumerate(originals):
        for name, copy in near_copies(im).items():
            same.setdefault(name, []).append(int(matcher.distances(phash(copy))[i]))
        d = matcher.distances(phash(im))
        different.append(np.delete(d, i))
    diff = np.concatenate(different)
    return {
        "threshold": PHASH_MATCH_THRESHOLD,
        "copies_max": {k: int(max(v)) for k, v in same.items()},
        "copies_p95": {k: float(np.percentile(v, 95)) for k, v in same.items()},
        "different_min": int(diff.min()),
        "different_p1": float(np.percentile(diff, 1)),
        "different_median": float(np.median(diff)),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(measure(), indent=2))
