"""sha256 and pHash matching of known-bad images."""

import io

import numpy as np
import pytest
from PIL import Image

from detection.ml.demo import render_listing_image
from detection.ml.phash import (
    PHASH_MATCH_THRESHOLD,
    HashMatcher,
    crop_fraction,
    fingerprint_bytes,
    fingerprint_image,
    from_signed64,
    hamming,
    jpeg,
    phash,
    reference_hashes,
    structured_photo,
    to_signed64,
)


def png_bytes(image):
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(image, quality):
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def known_bad():
    photos = {f"bad-{seed}": structured_photo(seed) for seed in range(20)}
    photos["bad-listing"] = render_listing_image("firearms", seed=3, size=(480, 360)).image
    return photos


@pytest.fixture(scope="module")
def matcher(known_bad):
    return HashMatcher(
        (ref, fingerprint_bytes(png_bytes(img)).sha256, reference_hashes(img))
        for ref, img in known_bad.items()
    )


def test_the_same_bytes_match_exactly(known_bad, matcher):
    data = png_bytes(known_bad["bad-7"])
    matches = matcher.match(fingerprint_bytes(data))
    assert matches[0].ref_id == "bad-7"
    assert matches[0].kind == "exact"
    assert matches[0].distance == 0
    assert [m.ref_id for m in matches].count("bad-7") == 1  # not listed again as a near match


@pytest.mark.parametrize("ref", ["bad-0", "bad-11", "bad-listing"])
@pytest.mark.parametrize(
    "edit",
    [
        "resize_half",
        "jpeg_q40",
        "crop_3pct",
        "crop_5pct",
        "crop_5pct_one_side",
        "resize_crop_jpeg",
    ],
)
def test_edited_copies_of_a_known_bad_image_match_it(known_bad, matcher, ref, edit):
    image = known_bad[ref]
    w, h = image.size
    copy = {
        "resize_half": lambda: image.resize((w // 2, h // 2), Image.Resampling.BILINEAR),
        "jpeg_q40": lambda: jpeg(image, 40),
        "crop_3pct": lambda: crop_fraction(image, 0.03),
        "crop_5pct": lambda: crop_fraction(image, 0.05),
        "crop_5pct_one_side": lambda: image.crop((round(w * 0.05), 0, w, h)),
        "resize_crop_jpeg": lambda: jpeg(
            crop_fraction(image.resize((w * 2 // 3, h * 2 // 3)), 0.04), 40
        ),
    }[edit]()
    data = jpeg_bytes(copy, 40) if "jpeg" in edit else png_bytes(copy)
    matches = matcher.match(fingerprint_bytes(data))
    assert matches, f"{edit} copy of {ref} matched nothing"
    assert matches[0].ref_id == ref
    assert matches[0].kind == "near"
    assert matches[0].distance <= PHASH_MATCH_THRESHOLD


def test_different_images_do_not_match(matcher):
    for seed in range(100, 140):
        assert matcher.match(fingerprint_image(structured_photo(seed))) == []
    for seed in range(10):  # another listing photo of the same kind of object
        other = render_listing_image("firearms", seed=1000 + seed, size=(480, 360)).image
        assert matcher.match(fingerprint_image(other)) == []


def test_hamming_and_signed_storage_round_trip():
    a, b = 0xFFFF_0000_0000_0001, 0x0000_0000_0000_0003
    assert hamming(a, b) == 17
    assert to_signed64(a) < 0
    assert from_signed64(to_signed64(a)) == a
    assert from_signed64(to_signed64(b)) == b
    m = HashMatcher([("x", "", to_signed64(a))])  # signed values from a database work too
    assert m.distances(b).tolist() == [17]


def test_phash_is_64_bits_and_stable():
    image = structured_photo(5)
    value = phash(image)
    assert 0 <= value < 1 << 64
    assert phash(image.copy()) == value
    assert reference_hashes(image)[0] == value


def test_many_known_images_are_matched_quickly():
    rng = np.random.default_rng(0)
    big = HashMatcher((i, "", [int(v) for v in rng.integers(0, 2**63, 7)]) for i in range(20000))
    import time

    started = time.perf_counter()
    big.match(fingerprint_image(structured_photo(1)))
    assert time.perf_counter() - started < 0.5
