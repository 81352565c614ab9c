"""Grad-CAM correctness on a model where the right answer is known, and on the real towers."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from detection.ml.gradcam import grad_cam, overlay_png, policy_heatmaps, vit_reshape_transform
from detection.ml.models import POLICY_CODES, ImageModel, ModelConfig, PolicyHeads

SIZE = 64


class RedPatchDetector(torch.nn.Module):
    """Built so that only bright red pixels raise logit 1.

    conv1 has three detectors: "red" (R high, G and B low), "blue" and a texture channel
    that fires on any edge. The head reads only the red channel after pooling, so blue
    patches and texture are distractors that Grad-CAM must ignore.
    """

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 3, kernel_size=3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(3, 3, kernel_size=3, padding=1),
            torch.nn.ReLU(),
        )
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.head = torch.nn.Linear(3, 2)
        with torch.no_grad():
            c1, c2 = self.features[0], self.features[2]
            c1.weight.zero_()
            c1.bias.zero_()
            c1.weight[0, 0, 1, 1], c1.weight[0, 1, 1, 1], c1.weight[0, 2, 1, 1] = 1.0, -1.0, -1.0
            c1.bias[0] = -0.3  # red: R - G - B - 0.3
            c1.weight[1, 2, 1, 1], c1.weight[1, 0, 1, 1], c1.weight[1, 1, 1, 1] = 1.0, -1.0, -1.0
            c1.bias[1] = -0.3  # blue
            c1.weight[2, :, 1, 1] = 1.0
            c1.weight[2, :, 1, 2] = -1.0  # horizontal gradient of brightness: texture
            c2.weight.zero_()
            c2.bias.zero_()
            for ch in range(3):
                c2.weight[ch, ch] = 1.0 / 9.0  # a 3x3 blur of each detector
            self.head.weight.zero_()
            self.head.bias.zero_()
            self.head.weight[1, 0] = 25.0  # logit 1 = pooled red evidence
            self.head.weight[0, 1] = 25.0  # logit 0 = pooled blue evidence

    def forward(self, x):
        return self.head(self.pool(self.features(x)).flatten(1))


def scene(red_at=None, blue_at=None, seed=0):
    """Grey textured background; optional 12x12 red and blue patches with top-left corners."""
    rng = np.random.default_rng(seed)
    img = 0.4 + 0.1 * rng.standard_normal((3, SIZE, SIZE)).astype(np.float32)
    img += 0.15 * np.sin(np.arange(SIZE) / 3.0)[None, None, :].astype(np.float32)
    for at, colour in ((red_at, (1.0, 0.05, 0.05)), (blue_at, (0.05, 0.05, 1.0))):
        if at is not None:
            y, x = at
            img[:, y : y + 12, x : x + 12] = np.array(colour, dtype=np.float32)[:, None, None]
    return torch.from_numpy(img)


def quadrant(cam):
    y, x = np.unravel_index(int(np.argmax(cam)), cam.shape)
    return ("top" if y < SIZE // 2 else "bottom") + "-" + ("left" if x < SIZE // 2 else "right")


def test_heatmap_peaks_on_the_patch_that_drives_the_score_and_follows_it():
    model = RedPatchDetector().eval()
    placements = {
        "top-left": (8, 10),
        "top-right": (6, 44),
        "bottom-left": (44, 8),
        "bottom-right": (40, 42),
    }
    inputs = torch.stack([scene(red_at=at, seed=i) for i, at in enumerate(placements.values())])
    maps, logits = grad_cam(model, model.features[2], inputs, 1, return_outputs=True)

    assert maps.shape == (4, SIZE, SIZE)
    assert maps.dtype == np.float32
    assert float(maps.min()) >= 0.0
    assert float(maps.max()) <= 1.0
    assert [quadrant(m) for m in maps] == list(placements)
    for m, (y, x) in zip(maps, placements.values(), strict=True):
        inside = m[y : y + 12, x : x + 12].mean()
        outside = np.delete(
            m.reshape(-1),
            np.ravel_multi_index(np.mgrid[y : y + 12, x : x + 12].reshape(2, -1), m.shape),
        ).mean()
        assert inside > 5 * outside
    assert (logits[:, 1] > logits[:, 0]).all()


def test_a_distractor_the_head_ignores_gets_no_heat():
    model = RedPatchDetector().eval()
    x = scene(red_at=(44, 44), blue_at=(6, 6))[None]
    red_map = grad_cam(model, model.features[2], x, 1)[0]
    blue_map = grad_cam(model, model.features[2], x, 0)[0]
    assert quadrant(red_map) == "bottom-right"
    assert quadrant(blue_map) == "top-left"  # same input, other head: the map moves with the target
    assert red_map[6:18, 6:18].max() < 0.05


def test_no_evidence_gives_an_all_zero_map():
    model = RedPatchDetector().eval()
    cam = grad_cam(model, "features[2]", scene()[None], 1)[0]
    assert float(cam.max()) == 0.0


def test_the_model_is_left_as_it_was():
    model = RedPatchDetector().train()
    before = [p.requires_grad for p in model.parameters()]
    grad_cam(model, model.features[2], scene(red_at=(0, 0))[None], 1)
    assert model.training
    assert [p.requires_grad for p in model.parameters()] == before
    assert not model.features[2]._forward_hooks


def test_vit_reshape_drops_the_class_token_and_folds_the_grid():
    tokens = torch.arange(2 * 50 * 4, dtype=torch.float32).reshape(2, 50, 4)
    folded = vit_reshape_transform((7, 7))(tokens)
    assert folded.shape == (2, 4, 7, 7)
    assert torch.equal(folded[1, :, 0, 0], tokens[1, 1])  # first patch, not the class token
    assert torch.equal(folded[0, :, 6, 6], tokens[0, 49])


def test_overlay_is_a_png_of_the_photo_size_with_heat_where_the_map_is():
    photo = Image.new("RGB", (300, 200), (120, 120, 120))
    cam = np.zeros((224, 224), np.float32)
    cam[:, 112:] = 1.0  # right half hot
    png = overlay_png(photo, cam, background="blur_grey")
    out = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    assert out.shape == (200, 300, 3)
    assert out[:, 200:, 0].mean() > out[:, :100, 0].mean() + 60  # jet's hot end is red
    assert out[:, :100, 2].mean() > out[:, :100, 0].mean()  # the cold end is blue


@pytest.mark.parametrize(
    ("architecture", "grid"),
    [("ViT-B-32", (7, 7)), ("RN50", (7, 7))],
)
def test_open_clip_towers_with_random_weights_give_maps_of_the_right_shape(architecture, grid):
    model = ImageModel(ModelConfig(architecture=architecture, batch_size=2))
    assert model.is_random_init
    assert "random" in model.label
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((len(POLICY_CODES), model.embed_dim)).astype(np.float32)
    model.heads = PolicyHeads(POLICY_CODES, weight, np.zeros(len(POLICY_CODES)))
    photos = [
        Image.fromarray(rng.integers(0, 255, (180, 260, 3), dtype=np.uint8)),
        Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)),
        Image.fromarray(rng.integers(0, 255, (300, 200, 3), dtype=np.uint8)),
    ]
    maps = policy_heatmaps(model, photos, "firearms")  # 3 images in batches of 2
    assert len(maps) == 3
    for photo, heat in zip(photos, maps, strict=True):
        assert heat.cam.shape == (224, 224)
        assert heat.cam.dtype == np.float32
        assert float(heat.cam.min()) >= 0.0
        assert float(heat.cam.max()) <= 1.0
        assert 0.0 < heat.probability < 1.0
        assert heat.model_version == model.version
        assert Image.open(io.BytesIO(heat.overlay_png)).size == photo.size
    # The probability from the Grad-CAM pass equals plain scoring.
    scores = model.score(photos)
    assert [round(s["firearms"], 4) for s in scores] == [round(h.probability, 4) for h in maps]
