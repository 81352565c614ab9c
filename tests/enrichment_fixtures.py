"""Demo weights built once per test session (about half a minute on 2 cores: an RN50 tower and
heads fitted on a few synthetic photos), and helpers for events with demo photos."""

import base64
import hashlib
import io

import pytest

from tests import factories as f


def jpeg_bytes(pil, quality=90) -> bytes:
    out = io.BytesIO()
    pil.convert("RGB").save(out, format="JPEG", quality=quality)
    return out.getvalue()


def photo(policy, seed):
    from detection.ml.demo import render_listing_image

    return render_listing_image(policy, seed=seed)


def image_entry(data: bytes, image_id="img-1") -> dict:
    return {
        "id": image_id,
        "data": base64.b64encode(data).decode(),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def event_with_photos(*datas, **kw) -> dict:
    return f.event(images=[image_entry(d, f"img-{i}") for i, d in enumerate(datas)], **kw)


@pytest.fixture(scope="session")
def demo_model_config(tmp_path_factory):
    from detection.ml.models import build_demo_weights

    return str(build_demo_weights(tmp_path_factory.mktemp("demo-model"), per_policy=6))


@pytest.fixture
def with_model(settings, demo_model_config, tmp_path):
    settings.DETECTION_MODEL_CONFIG = demo_model_config
    settings.REFERENCE_INDEX_DIR = tmp_path / "reference-index"
    settings.TRITON_URL = None
    return demo_model_config
