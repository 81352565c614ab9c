"""Model configuration, heads, the torchvision shim, and locally built demo weights."""

import io
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from detection.ml.demo import POLICIES, render_listing_image
from detection.ml.gradcam import policy_heatmaps
from detection.ml.models import (
    POLICY_CODES,
    ImageModel,
    ModelConfig,
    PolicyHeads,
    build_demo_weights,
    fit_heads,
    load_model,
)


def test_torchvision_imports_through_the_shim_in_a_fresh_process():
    code = (
        "from detection.ml.compat import ensure_torchvision;"
        "state = ensure_torchvision(); assert ensure_torchvision() == state;"
        "import torchvision, open_clip, pytorch_grad_cam, timm;"
        "print(state)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    # This machine's torchvision is a CUDA build next to a CPU torch: the schemas are needed.
    expected = "native" if torch.cuda.is_available() else "schemas-registered"
    assert out.stdout.strip().splitlines()[-1] == expected


def test_importing_the_package_loads_no_heavy_library():
    code = (
        "import sys, detection.ml, detection.ml.models, detection.ml.gradcam, detection.ml.ann,"
        " detection.ml.phash, detection.ml.text, detection.ml.triton_client, detection.ml.demo;"
        "heavy = [m for m in ('torch', 'open_clip', 'pytorch_grad_cam', 'faiss', 'tritonclient',"
        " 'transformers', 'sentence_transformers', 'django') if m in sys.modules];"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]


def test_config_from_json_resolves_paths_and_rejects_unknown_keys(tmp_path):
    (tmp_path / "model.json").write_text(
        json.dumps(
            {
                "architecture": "RN50",
                "weights_path": "tower.pt",
                "heads_path": "/abs/heads.npz",
                "label": "x",
            }
        )
    )
    cfg = ModelConfig.from_json(tmp_path / "model.json")
    assert cfg.weights_path == str(tmp_path / "tower.pt")
    assert cfg.heads_path == "/abs/heads.npz"
    assert cfg.device == "auto"
    assert cfg.batch_size == 16
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_dict({"architecture": "RN50", "weights": "x"})
    assert "random" in ModelConfig(architecture="RN50").display_label


def test_fit_heads_separates_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((120, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = {"firearms": (x[:, 0] > 0.1).astype(int), "scam": (x[:, 1] < -0.2).astype(int)}
    labels["drugs"] = np.zeros(120, int)  # one class only: no head
    heads = fit_heads(x, labels)
    assert heads.policies == ("firearms", "scam")
    assert heads.meta["skipped_single_class"] == ["drugs"]
    probs = heads.probabilities(x)
    accuracy = (
        (probs > 0.5).astype(int) == np.stack([labels["firearms"], labels["scam"]], 1)
    ).mean()
    assert accuracy > 0.9
    loaded = PolicyHeads.load(heads.save(tmp_path / "heads.npz"))
    assert loaded.policies == heads.policies
    assert loaded.meta == heads.meta
    np.testing.assert_allclose(loaded.probabilities(x), probs, rtol=1e-6)
    torch.save(
        {
            p: {"weight": torch.from_numpy(heads.weight[i]), "bias": float(heads.bias[i])}
            for i, p in enumerate(heads.policies)
        },
        tmp_path / "heads.pt",
    )
    np.testing.assert_allclose(
        PolicyHeads.load(tmp_path / "heads.pt").probabilities(x), probs, rtol=1e-5
    )
    with pytest.raises(ValueError, match="unknown policy"):
        PolicyHeads(("guns",), np.zeros((1, 4)), np.zeros(1))


def test_shortest_side_mode_crops_the_centre():
    model = ImageModel.__new__(ImageModel)
    model.config = ModelConfig(resize_mode="shortest")
    assert model.crop_box(Image.new("RGB", (300, 200))) == (50, 0, 250, 200)
    model.config = ModelConfig()
    assert model.crop_box(Image.new("RGB", (300, 200))) == (0, 0, 300, 200)


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo-weights")
    samples = [
        render_listing_image(p, seed=100 + i * 7 + j)
        for i, p in enumerate(POLICIES)
        for j in range(6)
    ]
    samples += [render_listing_image(None, seed=500 + j) for j in range(12)]
    return load_model(build_demo_weights(out, labelled_images=samples)), out


def test_demo_weights_are_files_a_config_names_and_say_what_they_are(demo_model):
    model, out = demo_model
    data = json.loads((out / "model.json").read_text())
    assert data["weights_path"] == "tower.pt"
    assert data["heads_path"] == "heads.npz"
    assert data["architecture"] == "RN50"
    assert "Demo weights, built locally" in model.label
    assert "Not a trained detector" in model.label
    assert not model.is_random_init
    assert model.version.startswith("demo-1+")
    assert model.policies == POLICY_CODES
    # The tower really is the saved file: a second load embeds identically.
    photo = render_listing_image("drugs", seed=9).image
    again = load_model(out / "model.json")
    np.testing.assert_allclose(again.embed_images([photo]), model.embed_images([photo]), atol=1e-6)
    scores = model.score([photo])[0]
    assert set(scores) == set(POLICY_CODES)
    assert all(0 <= v <= 1 for v in scores.values())


def test_demo_heatmaps_point_at_the_object_more_often_than_not(demo_model):
    model, _ = demo_model
    hits, total = 0, 0
    for policy in ("firearms", "stolen_goods", "human_trafficking", "scam"):
        samples = [render_listing_image(policy, seed=7000 + k) for k in range(4)]
        for sample, heat in zip(
            samples, policy_heatmaps(model, [s.image for s in samples], policy), strict=True
        ):
            x, y = heat.peak()
            left, top, right, bottom = sample.bbox
            hits += left - 8 <= x <= right + 8 and top - 8 <= y <= bottom + 8
            total += 1
            assert Image.open(io.BytesIO(heat.overlay_png)).size == sample.image.size
    # Objects cover about a tenth of the photo: chance would put few peaks on them.
    assert hits / total >= 0.6, f"{hits}/{total} peaks on the object"
