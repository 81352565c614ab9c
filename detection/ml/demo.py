"""Synthetic listing photos for the demo and for tests.

Each image is a product-style photo: a textured surface (wood, fabric or a painted wall with
lighting falloff and sensor noise) with one object drawn on it. For a policy, the object is a
flat silhouette standing for what makes such a listing violating (a handgun, pills, a branded
handbag, a laptop, a passport, gift cards); benign images carry an everyday object (a mug, a
book, a plant pot, a shoe). The object's bounding box is returned so tests can check that a
heatmap points at it.

These are drawings, not photographs: they let the demo show heatmaps that point somewhere
meaningful with locally built weights. They say nothing about real-world accuracy.
Only numpy and Pillow are used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from detection.policies import POLICY_CODES as POLICIES  # plain constants, no Django

BENIGN_OBJECTS: tuple[str, ...] = ("mug", "book", "plant", "shoe")


@dataclass(frozen=True)
class DemoImage:
    image: Image.Image
    policy: str | None  # None for a benign listing
    object_name: str
    bbox: tuple[int, int, int, int]  # left, top, right, bottom in pixels
    mask: Image.Image  # "L", 255 where the object was drawn


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    kind = rng.integers(3)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind == 0:  # wood: warm base, wavy grain along x
        base = np.array(rng.uniform([120, 80, 45], [185, 135, 90]), dtype=np.float32)
        freq = rng.uniform(0.05, 0.12)
        phase = rng.uniform(0, 2 * np.pi)
        grain = np.sin(yy * freq + 3.0 * np.sin(xx * 0.015 + phase)) * 0.5 + 0.5
        img = base[None, None, :] * (0.88 + 0.14 * grain[..., None])
    elif kind == 1:  # fabric: cool base with a fine weave
        base = np.array(rng.uniform([60, 70, 90], [170, 180, 200]), dtype=np.float32)
        weave = (np.sin(xx * 1.3) * np.sin(yy * 1.3)) * 0.5 + 0.5
        img = base[None, None, :] * (0.9 + 0.12 * weave[..., None])
    else:  # painted wall with a soft vertical gradient
        base = np.array(rng.uniform([180, 175, 160], [235, 232, 225]), dtype=np.float32)
        grad = 1.0 - 0.25 * (yy / height)
        img = base[None, None, :] * grad[..., None]
    # Lighting falloff from a random spot, as a phone photo of a table would have.
    cx, cy = rng.uniform(0, width), rng.uniform(0, height)
    dist = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) / math.hypot(width, height)
    img = img * (1.08 - 0.35 * dist[..., None])
    img = img + rng.normal(0, 4.0, img.shape)
    pixels: np.ndarray = np.clip(img, 0, 255).astype(np.uint8)
    return pixels


def _jitter(
    rng: np.random.Generator, rgb: tuple[int, int, int], amount: int = 18
) -> tuple[int, ...]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)


def _shape_points(
    points: Sequence[tuple[float, float]], x0: float, y0: float, s: float
) -> list[tuple[float, float]]:
    return [(x0 + px * s, y0 + py * s) for px, py in points]


# Unit-box outlines (x, y in [0, 1]); scaled to the object's size when drawn.
_HANDGUN = [
    (0.0, 0.12),
    (0.95, 0.12),
    (1.0, 0.2),
    (1.0, 0.38),
    (0.42, 0.38),
    (0.40, 0.50),
    (0.30, 0.50),
    (0.28, 0.42),
    (0.26, 0.56),
    (0.34, 1.0),
    (0.10, 1.0),
    (0.02, 0.50),
    (0.0, 0.40),
]
_HANDBAG = [(0.12, 0.35), (0.88, 0.35), (1.0, 1.0), (0.0, 1.0)]
_SHOE = [
    (0.0, 0.55),
    (0.35, 0.45),
    (0.55, 0.10),
    (0.75, 0.10),
    (0.80, 0.45),
    (1.0, 0.62),
    (1.0, 0.90),
    (0.0, 0.90),
]


def _draw_object(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, name: str, x0: float, y0: float, s: float
) -> None:
    """Draw object `name` inside the box (x0, y0, x0+s, y0+s)."""
    if name == "handgun":
        colour = _jitter(rng, (45, 45, 52), 10)
        draw.polygon(_shape_points(_HANDGUN, x0, y0, s), fill=colour)
        draw.rectangle([x0 + 0.6 * s, y0 + 0.16 * s, x0 + 0.9 * s, y0 + 0.2 * s], fill=(90, 90, 98))
        draw.ellipse([x0 + 0.12 * s, y0 + 0.6 * s, x0 + 0.2 * s, y0 + 0.68 * s], fill=(20, 20, 24))
    elif name == "pills":
        for _ in range(9):
            cx, cy = x0 + rng.uniform(0.1, 0.9) * s, y0 + rng.uniform(0.1, 0.9) * s
            w, h = 0.16 * s, 0.08 * s
            colour = _jitter(rng, [(230, 60, 60), (250, 250, 250), (70, 130, 230)][rng.integers(3)])
            draw.rounded_rectangle(
                [cx - w, cy - h, cx + w, cy + h], radius=h, fill=colour, outline=(40, 40, 40)
            )
    elif name == "handbag":
        body = _jitter(rng, (160, 105, 55))
        draw.arc(
            [x0 + 0.25 * s, y0 + 0.0 * s, x0 + 0.75 * s, y0 + 0.7 * s],
            180,
            360,
            fill=(90, 55, 25),
            width=max(2, int(0.05 * s)),
        )
        draw.polygon(_shape_points(_HANDBAG, x0, y0, s), fill=body)
        for k in range(3):  # the copied logo pattern
            cx = x0 + (0.3 + 0.2 * k) * s
            draw.ellipse(
                [cx - 0.07 * s, y0 + 0.58 * s, cx + 0.07 * s, y0 + 0.72 * s],
                fill=(225, 190, 60),
                outline=(120, 80, 20),
            )
    elif name == "laptop":
        draw.rectangle(
            [x0 + 0.1 * s, y0 + 0.1 * s, x0 + 0.9 * s, y0 + 0.62 * s],
            fill=(30, 30, 34),
            outline=(160, 160, 168),
            width=max(2, int(0.03 * s)),
        )
        draw.rectangle(
            [x0 + 0.16 * s, y0 + 0.16 * s, x0 + 0.84 * s, y0 + 0.56 * s],
            fill=_jitter(rng, (40, 90, 170)),
        )
        draw.polygon(
            _shape_points([(0.02, 0.66), (0.98, 0.66), (1.0, 0.8), (0.0, 0.8)], x0, y0, s),
            fill=(185, 185, 192),
        )
    elif name == "passport":
        draw.rounded_rectangle(
            [x0 + 0.2 * s, y0 + 0.05 * s, x0 + 0.8 * s, y0 + 0.95 * s],
            radius=0.04 * s,
            fill=_jitter(rng, (110, 20, 35), 10),
        )
        draw.ellipse(
            [x0 + 0.36 * s, y0 + 0.3 * s, x0 + 0.64 * s, y0 + 0.58 * s],
            outline=(215, 180, 70),
            width=max(2, int(0.03 * s)),
        )
        draw.rectangle(
            [x0 + 0.32 * s, y0 + 0.72 * s, x0 + 0.68 * s, y0 + 0.76 * s], fill=(215, 180, 70)
        )
    elif name == "gift_cards":
        for k in range(3):
            ox, oy = x0 + 0.08 * k * s, y0 + (0.1 + 0.22 * k) * s
            colour = _jitter(rng, [(240, 140, 20), (40, 170, 90), (200, 40, 160)][k])
            draw.rounded_rectangle(
                [ox, oy, ox + 0.75 * s, oy + 0.45 * s],
                radius=0.05 * s,
                fill=colour,
                outline=(255, 255, 255),
                width=2,
            )
            draw.text((ox + 0.08 * s, oy + 0.12 * s), "$100", fill=(255, 255, 255))
    elif name == "mug":
        colour = _jitter(rng, (235, 235, 230))
        draw.ellipse(
            [x0 + 0.55 * s, y0 + 0.3 * s, x0 + 0.95 * s, y0 + 0.7 * s],
            outline=colour,
            width=max(3, int(0.07 * s)),
        )
        draw.rectangle([x0 + 0.1 * s, y0 + 0.2 * s, x0 + 0.7 * s, y0 + 0.95 * s], fill=colour)
    elif name == "book":
        draw.rectangle(
            [x0 + 0.1 * s, y0 + 0.15 * s, x0 + 0.9 * s, y0 + 0.85 * s],
            fill=_jitter(rng, (40, 90, 60), 30),
        )
        draw.rectangle(
            [x0 + 0.1 * s, y0 + 0.15 * s, x0 + 0.18 * s, y0 + 0.85 * s], fill=(25, 45, 30)
        )
    elif name == "plant":
        draw.polygon(
            _shape_points([(0.25, 0.6), (0.75, 0.6), (0.68, 1.0), (0.32, 1.0)], x0, y0, s),
            fill=_jitter(rng, (190, 95, 55)),
        )
        for k in range(5):
            ang = math.pi * (0.15 + 0.175 * k)
            cx, cy = x0 + (0.5 + 0.3 * math.cos(ang)) * s, y0 + (0.58 - 0.4 * math.sin(ang)) * s
            draw.ellipse(
                [cx - 0.1 * s, cy - 0.1 * s, cx + 0.1 * s, cy + 0.1 * s],
                fill=_jitter(rng, (60, 150, 60)),
            )
    elif name == "shoe":
        draw.polygon(_shape_points(_SHOE, x0, y0, s), fill=_jitter(rng, (220, 220, 225), 30))
        draw.rectangle([x0, y0 + 0.86 * s, x0 + s, y0 + 0.95 * s], fill=(60, 60, 60))
    else:
        raise ValueError(f"unknown demo object: {name}")


POLICY_OBJECTS: dict[str, str] = {
    "firearms": "handgun",
    "drugs": "pills",
    "counterfeit": "handbag",
    "stolen_goods": "laptop",
    "human_trafficking": "passport",
    "scam": "gift_cards",
}


def render_listing_image(
    policy: str | None,
    *,
    seed: int,
    size: tuple[int, int] = (320, 240),
    object_fraction: tuple[float, float] = (0.32, 0.45),
    position: tuple[float, float] | None = None,
) -> DemoImage:
    """Draw one listing photo; `policy=None` draws a benign object.

    `position` (fractions of the free width and height, 0..1) places the object; random when None.
    """
    if policy is not None and policy not in POLICY_OBJECTS:
        raise ValueError(f"unknown policy: {policy}")
    rng = np.random.default_rng(seed)
    width, height = size
    canvas = Image.fromarray(_background(rng, width, height))
    name = POLICY_OBJECTS[policy] if policy else BENIGN_OBJECTS[rng.integers(len(BENIGN_OBJECTS))]
    side = rng.uniform(*object_fraction) * min(width, height)
    fx, fy = position if position is not None else (rng.uniform(), rng.uniform())
    x0 = 4 + fx * (width - side - 8)
    y0 = 4 + fy * (height - side - 8)
    # Soft shadow first, then the object on top.
    shadow = Image.new("L", size, 0)
    ImageDraw.Draw(shadow).ellipse(
        [x0 + 0.05 * side, y0 + 0.85 * side, x0 + 1.05 * side, y0 + 1.05 * side], fill=90
    )
    shadow = shadow.filter(ImageFilter.GaussianBlur(6))
    canvas = Image.composite(Image.new("RGB", size, (20, 20, 20)), canvas, shadow)
    # The object goes on its own transparent layer, whose alpha is the object's mask.
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    _draw_object(ImageDraw.Draw(layer), rng, name, x0, y0, side)
    mask = layer.getchannel("A")
    canvas.paste(layer.convert("RGB"), (0, 0), mask)
    canvas = canvas.filter(ImageFilter.GaussianBlur(0.6))
    left, top, right, bottom = mask.getbbox() or (int(x0), int(y0), int(x0 + side), int(y0 + side))
    return DemoImage(
        image=canvas, policy=policy, object_name=name, bbox=(left, top, right, bottom), mask=mask
    )


def demo_training_set(per_policy: int = 24, benign: int = 48, seed: int = 0) -> list[DemoImage]:
    """A labelled set for fitting demo heads: `per_policy` images per policy plus benign ones."""
    images: list[DemoImage] = []
    for p_index, policy in enumerate(POLICIES):
        for i in range(per_policy):
            images.append(
                render_listing_image(policy, seed=seed * 1_000_003 + p_index * 10_007 + i)
            )
    for i in range(benign):
        images.append(render_listing_image(None, seed=seed * 1_000_003 + 99_991 + i))
    return images
