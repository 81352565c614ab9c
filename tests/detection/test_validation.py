import base64
import hashlib

import pytest

from detection.intake.validation import validate_event
from tests import factories as f


def reasons_of(ev):
    valid, reasons = validate_event(ev)
    assert valid is None, "expected the event to be rejected"
    return {(r.field, r.code) for r in reasons}, reasons


def test_a_valid_event_passes_with_decoded_images():
    valid, reasons = validate_event(f.event())
    assert reasons == []
    assert valid.images[0].content_type == "image/png"
    assert (valid.images[0].width, valid.images[0].height) == (64, 48)
    assert valid.top_policy == ("firearms", 0.8)


def test_json_text_is_parsed_and_garbage_is_named():
    assert validate_event('{"schema_version": 1')[1][0].code == "unparseable_json"
    assert validate_event([1, 2])[1][0].code == "wrong_type"


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("listing.title", None, ("listing.title", "missing_field")),
        ("seller.prior_violations", "many", ("seller.prior_violations", "wrong_type")),
        ("listing.price.amount", 12.5, ("listing.price.amount", "wrong_type")),
        ("listing.price.amount", "12,50", ("listing.price.amount", "bad_format")),
        ("detection.scores", {"firearms": 1.2}, ("detection.scores.firearms", "out_of_range")),
        ("detection.scores", {"firearms": -0.1}, ("detection.scores.firearms", "out_of_range")),
        ("detection.scores", {"weapons": 0.5}, ("detection.scores", "unknown_policy")),
        ("listing.title", "x" * 301, ("listing.title", "too_long")),
        ("listing.description", "y" * 10_001, ("listing.description", "too_long")),
        ("schema_version", 2, ("schema_version", "unsupported_value")),
        ("emitted_at", "yesterday", ("emitted_at", "bad_format")),
        ("listing.unexpected", "field", ("listing", "unknown_field")),
    ],
)
def test_each_bad_field_gets_a_precise_reason(path, value, expected):
    ev = f.mutate(f.event(), path, value, delete=value is None)
    found, reasons = reasons_of(ev)
    assert expected in found, reasons


def test_unknown_policy_message_names_the_code():
    _, reasons = reasons_of(f.mutate(f.event(), "detection.scores", {"weapons": 0.5}))
    assert reasons[0].message == "unknown policy code 'weapons'"


def test_too_many_images():
    ev = f.event(images=[f.inline_image(f"img-{i}") for i in range(13)])
    found, _ = reasons_of(ev)
    assert ("listing.images", "too_many_items") in found


def test_image_url_host_must_be_on_the_allow_list(settings):
    settings.IMAGE_HOST_ALLOWLIST = ["images.marketplace.example"]
    ok = f.event(
        images=[{"id": "a", "url": "https://images.marketplace.example/a.jpg", "sha256": "0" * 64}]
    )
    assert validate_event(ok)[1] == []
    for url in [
        "https://evil.example.net/a.jpg",
        "https://images.marketplace.example.evil.net/a.jpg",
        "https://user:pw@images.marketplace.example/a.jpg",
    ]:
        found, _ = reasons_of(f.event(images=[{"id": "a", "url": url, "sha256": "0" * 64}]))
        assert found & {
            ("listing.images[0].url", "host_not_allowed"),
            ("listing.images[0].url", "bad_url"),
        }, url
    found, _ = reasons_of(
        f.event(
            images=[
                {"id": "a", "url": "http://images.marketplace.example/a.jpg", "sha256": "0" * 64}
            ]
        )
    )
    assert ("listing.images[0].url", "bad_format") in found


def test_inline_data_must_be_an_image_of_bounded_size(settings):
    pdf = b"%PDF-1.4 definitely not an image"
    found, _ = reasons_of(f.event(images=[f.inline_image(data=pdf)]))
    assert found == {("listing.images[0].data", "not_an_image")}

    settings.INGEST_MAX_IMAGE_BYTES = 2048
    big = f.png_bytes(size=(400, 400)) + b"\0" * 4096
    found, _ = reasons_of(f.event(images=[f.inline_image(data=big)]))
    assert found & {
        ("listing.images[0].data", "image_too_large"),
        ("listing.images[0].data", "too_long"),
    }

    data = f.png_bytes()
    wrong = {
        "id": "a",
        "data": base64.b64encode(data).decode(),
        "sha256": hashlib.sha256(b"other").hexdigest(),
    }
    found, _ = reasons_of(f.event(images=[wrong]))
    assert found == {("listing.images[0].sha256", "sha256_mismatch")}

    found, _ = reasons_of(
        f.event(images=[{"id": "a", "data": "!!not base64!!", "sha256": "0" * 64}])
    )
    assert found == {("listing.images[0].data", "bad_base64")}


def test_an_image_needs_exactly_one_source():
    found, _ = reasons_of(f.event(images=[{"id": "a", "sha256": "0" * 64}]))
    assert ("listing.images[0]", "bad_image_source") in found


def test_decompression_bombs_are_refused_by_pixel_count(settings):
    settings.INGEST_MAX_IMAGE_PIXELS = 1000
    found, _ = reasons_of(f.event(images=[f.inline_image(data=f.png_bytes(size=(100, 100)))]))
    assert found == {("listing.images[0].data", "image_too_large")}


NUL_MESSAGE = "the value contains a NUL character (U+0000), which cannot be stored"


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (lambda: f.event(title="Pistol\x00 for sale"), {("listing.title", "unstorable_text")}),
        (
            lambda: f.event(description="cash \ud800 only"),
            {("listing.description", "unstorable_text")},
        ),
        (
            lambda: f.event(reason_codes=["weapon", "weapon\x00keyword"]),
            {("detection.reason_codes[1]", "unstorable_text")},
        ),
        (
            lambda: f.event(scores={"fire\x00arms": 0.9}),
            {
                ("detection.scores.fire\\u0000arms", "unstorable_text"),
                ("detection.scores", "unknown_policy"),
            },
        ),
        (
            lambda: f.event(modality_scores={"text": {"firearms\udfff": 0.9}}),
            {
                ("detection.modality_scores.text.firearms\\udfff", "unstorable_text"),
                ("detection.modality_scores.text", "unknown_policy"),
            },
        ),
        (
            lambda: f.event(images=[f.inline_image("img\x00-1")]),
            {("listing.images[0].id", "unstorable_text"), ("listing.images[0].id", "bad_format")},
        ),
        (
            lambda: f.event(
                images=[
                    {
                        "id": "a",
                        "url": "https://images.marketplace.example/a\x00.jpg",
                        "sha256": "0" * 64,
                    }
                ]
            ),
            {("listing.images[0].url", "unstorable_text")},
        ),
        (
            lambda: f.mutate(f.event(), "listing.x\x00", "y"),
            {("listing.x\\u0000", "unstorable_text"), ("listing", "unknown_field")},
        ),
    ],
    ids=[
        "title",
        "description-surrogate",
        "reason-code",
        "scores-key",
        "modality-key-surrogate",
        "image-id",
        "image-url",
        "unknown-key",
    ],
)
def test_text_the_database_cannot_store_is_rejected_wherever_it_is(settings, event, expected):
    settings.IMAGE_HOST_ALLOWLIST = ["images.marketplace.example"]
    found, reasons = reasons_of(event())
    assert found == expected, reasons
    # Every reason is itself storable: the path names an offending key by its escape.
    assert all("\x00" not in r.field + r.message for r in reasons)


def test_an_unstorable_reason_says_what_it_found():
    _, reasons = reasons_of(f.event(title="a\x00b", description="c\ud83dd"))
    assert [r.as_dict() for r in reasons] == [
        {"field": "listing.title", "code": "unstorable_text", "message": NUL_MESSAGE},
        {
            "field": "listing.description",
            "code": "unstorable_text",
            "message": "the value contains a lone surrogate (U+D83D), which cannot be stored",
        },
    ]


def test_storable_text_outside_ascii_is_accepted():
    valid, reasons = validate_event(
        f.event(title="Pistolet à eau 水枪 🔫", description="Ключ\tтаб\nстрока")
    )
    assert reasons == []
    assert valid.payload["listing"]["title"] == "Pistolet à eau 水枪 🔫"
