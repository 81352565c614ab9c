"""Grad-CAM heatmaps for a policy head over the image tower (pytorch_grad_cam).

Two layers of API:

- `grad_cam(model, target_layer, inputs, target_indices, reshape_transform=None)` works on any
  torch module whose output is (n, classes) logits and any of its layers: it returns the raw
  maps, (n, H, W) float32 in [0, 1] at the input's resolution.
- `policy_heatmaps(image_model, images, policy)` does it for the portal's `ImageModel`: the
  right target layer for the tower (ViT: `visual.transformer.resblocks[-1].ln_1` with a
  reshape that drops the class token and folds the patch tokens into the grid; ResNet:
  `visual.layer4[-1]`), batching, the policy's probability from the same forward pass, and an
  overlay PNG at the photo's own size over a blurred or greyscale version of it (the review
  page blurs listing images by default).

Speed: the tower's parameters are frozen and the target layer's output is made the only
leaf that requires a gradient, so the backward pass runs through the layers after the
target layer only (for a ViT, one block and the head) instead of the whole network.

A map can be all zeros: Grad-CAM keeps only evidence *for* the target (a ReLU), and with
untrained towers some targets have none. `Heatmap.empty` says so; the page should show
"no positive evidence" rather than a blank overlay.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast, overload

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from detection.ml.compat import ensure_torchvision

if TYPE_CHECKING:
    import torch

    from detection.ml.models import ImageModel


ReshapeTransform = Callable[["torch.Tensor"], "torch.Tensor"]


def vit_reshape_transform(grid_size: tuple[int, int] | int) -> ReshapeTransform:
    """(n, prefix + gh*gw, d) tokens → (n, d, gh, gw), dropping the class (and any prefix)
    tokens."""
    gh, gw = (grid_size, grid_size) if isinstance(grid_size, int) else grid_size

    def reshape(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.dim() != 3:
            raise ValueError(
                f"expected (batch, tokens, dim) activations, got {tuple(tensor.shape)}"
            )
        if tensor.shape[0] == gh * gw + 1 and tensor.shape[1] != gh * gw + 1:
            tensor = tensor.transpose(0, 1)  # sequence-first transformer
        prefix = tensor.shape[1] - gh * gw
        if prefix < 0:
            raise ValueError(f"{tensor.shape[1]} tokens cannot fill a {gh}x{gw} grid")
        patches = tensor[:, prefix:, :]
        return patches.reshape(tensor.shape[0], gh, gw, tensor.shape[2]).permute(0, 3, 1, 2)

    return reshape


def tower_target(visual: Any) -> tuple[torch.nn.Module, ReshapeTransform | None]:
    """(target layer, reshape transform) for an open_clip image tower."""
    if hasattr(visual, "transformer") and hasattr(visual.transformer, "resblocks"):
        grid = getattr(visual, "grid_size", None)
        if grid is None:
            raise ValueError("ViT tower without grid_size")
        return visual.transformer.resblocks[-1].ln_1, vit_reshape_transform(tuple(grid))
    if hasattr(visual, "layer4"):
        return visual.layer4[-1], None
    if hasattr(visual, "trunk"):  # timm towers: the last stage of the trunk
        trunk = visual.trunk
        for name in ("stages", "layers", "blocks"):
            if hasattr(trunk, name):
                return getattr(trunk, name)[-1], None
    raise ValueError(f"no known Grad-CAM target layer for {type(visual).__name__}")


def resolve_layer(model: torch.nn.Module, path: str) -> torch.nn.Module:
    """`model` attribute path like "visual.transformer.resblocks[-1].ln_1" → the module."""
    obj: Any = model
    for part in path.replace("]", "").split("."):
        name, *indices = part.split("[")
        if name:
            obj = getattr(obj, name)
        for index in indices:
            obj = obj[int(index)]
    return cast("torch.nn.Module", obj)


def _leaf_output_hook(
    module: torch.nn.Module, inputs: object, output: object
) -> torch.Tensor | None:
    # With frozen parameters nothing upstream needs a gradient: make the target layer's output
    # a leaf that does, so backward stops here instead of walking the whole tower.
    import torch

    if isinstance(output, torch.Tensor) and not output.requires_grad:
        return output.detach().requires_grad_(True)
    return None


@overload
def grad_cam(
    model: torch.nn.Module,
    target_layer: torch.nn.Module | str,
    inputs: torch.Tensor,
    target_indices: int | Sequence[int],
    *,
    reshape_transform: ReshapeTransform | None = None,
    return_outputs: Literal[False] = False,
) -> np.ndarray: ...


@overload
def grad_cam(
    model: torch.nn.Module,
    target_layer: torch.nn.Module | str,
    inputs: torch.Tensor,
    target_indices: int | Sequence[int],
    *,
    reshape_transform: ReshapeTransform | None = None,
    return_outputs: Literal[True],
) -> tuple[np.ndarray, np.ndarray]: ...


def grad_cam(
    model: torch.nn.Module,
    target_layer: torch.nn.Module | str,
    inputs: torch.Tensor,
    target_indices: int | Sequence[int],
    *,
    reshape_transform: ReshapeTransform | None = None,
    return_outputs: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray | None]:
    """Grad-CAM maps for `inputs` (n, C, H, W) and the output unit(s) `target_indices`.

    Returns (n, H, W) float32 in [0, 1]; with `return_outputs`, also the model's (n, k) outputs
    from the same forward pass as a numpy array.
    """
    import torch

    ensure_torchvision()
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layer = resolve_layer(model, target_layer) if isinstance(target_layer, str) else target_layer
    n = inputs.shape[0]
    indices = [int(target_indices)] * n if isinstance(target_indices, int) else list(target_indices)
    if len(indices) != n:
        raise ValueError(f"{len(indices)} targets for {n} inputs")
    was_training = model.training
    hook = layer.register_forward_hook(_leaf_output_hook)
    cam = GradCAM(model=model, target_layers=[layer], reshape_transform=reshape_transform)
    try:
        with torch.enable_grad():
            maps = cam(input_tensor=inputs, targets=[ClassifierOutputTarget(i) for i in indices])
        outputs = cam.outputs.detach().float().cpu().numpy() if return_outputs else None
    finally:
        cam.activations_and_grads.release()
        hook.remove()
        model.train(was_training)
    maps = np.nan_to_num(np.asarray(maps, dtype=np.float32), nan=0.0)
    maps = np.clip(maps, 0.0, 1.0)
    return (maps, outputs) if return_outputs else maps


# --------------------------------------------------------------------------------------------
# Overlays


def _jet(values: np.ndarray) -> np.ndarray:
    """A jet-like colour map, values in [0, 1] → uint8 RGB (numpy only): dark blue → cyan →
    yellow → bright red (jet's last, darkening eighth is left out so the peak stands out)."""
    v = 0.875 * np.clip(values, 0.0, 1.0)[..., None]
    r = np.clip(1.5 - np.abs(4 * v - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * v - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * v - 1), 0, 1)
    return (np.concatenate([r, g, b], axis=-1) * 255).astype(np.uint8)


def overlay_png(
    image: Image.Image,
    cam: np.ndarray,
    *,
    background: str = "blur",
    crop_box: tuple[int, int, int, int] | None = None,
    max_side: int = 768,
    strength: float = 0.65,
) -> bytes:
    """PNG bytes of `cam` (H×W in [0, 1]) over `image`.

    `background`: "blur" (the page's default view of listing images), "grey", "blur_grey" or
    "none". `crop_box` is the part of the image the map covers (default: all of it). The
    heat is blended in proportion to its strength, so cold regions show the background.
    """
    base = image.convert("RGB")
    scale = min(1.0, max_side / max(base.size))
    if scale < 1.0:
        base = base.resize(
            (round(base.width * scale), round(base.height * scale)), Image.Resampling.LANCZOS
        )
    box: tuple[int, ...] = crop_box or (0, 0, image.width, image.height)
    box = tuple(round(c * scale) for c in box)
    if background in ("grey", "blur_grey"):
        base = ImageOps.grayscale(base).convert("RGB")
    if background in ("blur", "blur_grey"):
        base = base.filter(ImageFilter.GaussianBlur(max(2.0, max(base.size) / 40)))
    elif background not in ("grey", "none"):
        raise ValueError(f"unknown background {background!r}")

    full = np.zeros((base.height, base.width), dtype=np.float32)
    bw, bh = max(1, box[2] - box[0]), max(1, box[3] - box[1])
    resized = Image.fromarray(np.asarray(cam, dtype=np.float32), mode="F").resize(
        (bw, bh), Image.Resampling.BILINEAR
    )
    full[box[1] : box[1] + bh, box[0] : box[0] + bw] = np.asarray(resized)[
        : base.height - box[1], : base.width - box[0]
    ]
    full = np.clip(full, 0.0, 1.0)
    alpha = (0.05 + strength * full)[..., None]
    blended = (
        np.asarray(base, dtype=np.float32) * (1 - alpha) + _jet(full).astype(np.float32) * alpha
    )
    out = Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    out.save(buffer, format="PNG", compress_level=4)  # a fast level: this runs per image
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------
# The portal's model


@dataclass(frozen=True)
class Heatmap:
    policy: str
    cam: np.ndarray  # float32 (image_size, image_size) in [0, 1], over the model's view
    crop_box: tuple[int, int, int, int]  # the part of the photo the map covers
    probability: float  # the head's probability for `policy`, same forward pass
    overlay_png: bytes
    model_version: str
    model_label: str

    @property
    def empty(self) -> bool:
        """No positive evidence for the policy anywhere (Grad-CAM's ReLU removed it all)."""
        return float(self.cam.max(initial=0.0)) <= 0.0

    def peak(self) -> tuple[float, float]:
        """(x, y) of the hottest point in the photo's pixel coordinates."""
        y, x = np.unravel_index(int(np.argmax(self.cam)), self.cam.shape)
        left, top, right, bottom = self.crop_box
        return (
            left + (x + 0.5) / self.cam.shape[1] * (right - left),
            top + (y + 0.5) / self.cam.shape[0] * (bottom - top),
        )


# Grad-CAM hooks are registered on the shared model for the length of a call: one at a time.
_cam_lock = threading.Lock()


def policy_heatmaps(
    model: ImageModel,
    images: Sequence[Image.Image],
    policy: str,
    *,
    background: str = "blur",
    with_overlay: bool = True,
) -> list[Heatmap]:
    """A heatmap per image for `policy`'s head, computed in batches of the config's size."""
    scorer = model.scorer()
    heads = model.heads
    assert heads is not None  # scorer() raised otherwise
    index = heads.index(policy)
    layer, reshape = tower_target(scorer.visual)
    results: list[Heatmap] = []
    images = list(images)
    for chunk in model.batches(images):
        inputs = model.preprocess(chunk).to(model.device)
        with _cam_lock:
            maps, logits = grad_cam(
                scorer, layer, inputs, index, reshape_transform=reshape, return_outputs=True
            )
        probs = 1.0 / (1.0 + np.exp(-logits[:, index]))
        for image, cam, prob in zip(chunk, maps, probs, strict=True):
            box = model.crop_box(image)
            png = (
                overlay_png(image, cam, background=background, crop_box=box)
                if with_overlay
                else b""
            )
            results.append(
                Heatmap(
                    policy=policy,
                    cam=cam,
                    crop_box=box,
                    probability=float(prob),
                    overlay_png=png,
                    model_version=model.version,
                    model_label=model.label,
                )
            )
    return results
