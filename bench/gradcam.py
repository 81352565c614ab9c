"""Grad-CAM latency per image beside embedding-only latency, in the same run.

ViT-B-32 image tower with random weights (no pretrained weights exist on this machine; the
cost does not depend on the weights' values) and six random policy heads, on 320×240
synthetic listing photos. For batch sizes 1 and 8:

- embedding only: `ImageModel.embed_images` (preprocess + forward, inference mode);
- Grad-CAM: `policy_heatmaps(..., with_overlay=False)` (preprocess + forward with autograd +
  backward from the policy logit to the target layer + CAM), and the same with the overlay
  PNG over the blurred photo, as the enrichment step stores it;
- for reference, "naive" Grad-CAM with every parameter requiring a gradient, so backward
  walks the whole tower (what pytorch_grad_cam does on an unfrozen model).

Per-image milliseconds are medians over rounds; embedding and Grad-CAM rounds alternate so
machine noise hits both alike. Aim (issue 3): Grad-CAM ≤ 2.5 × embedding-only latency.
Where a GPU is present the same is measured there too, with throughput in images/s.
Run: .venv/bin/python -m bench.gradcam
"""

from __future__ import annotations

import os

# Before torch/faiss load OpenMP: on a busy machine, threads that spin while waiting for a
# core that another process holds make every parallel op many times slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import statistics
import time

import numpy as np

from bench._common import write_result
from detection.ml.demo import POLICIES, render_listing_image
from detection.ml.gradcam import policy_heatmaps
from detection.ml.models import ImageModel, ModelConfig, PolicyHeads

ARCH = "ViT-B-32"


def per_image_ms(fn, images, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn(images)
        out.append((time.perf_counter() - started) * 1000 / len(images))
    return out


def measure(device: str, batches: dict[int, int]) -> dict:
    import torch

    model = ImageModel(ModelConfig(architecture=ARCH, device=device, batch_size=max(batches)))
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((len(POLICIES), model.embed_dim)).astype(np.float32)
    model.heads = PolicyHeads(POLICIES, weight, np.zeros(len(POLICIES), np.float32))
    photos = [render_listing_image(POLICIES[i % 6], seed=i).image for i in range(max(batches))]

    def sync():
        if model.device.type == "cuda":
            torch.cuda.synchronize()

    def embed(images):
        model.embed_images(images)
        sync()

    def cam(images):
        policy_heatmaps(model, images, "firearms", with_overlay=False)
        sync()

    def cam_overlay(images):
        policy_heatmaps(model, images, "firearms", with_overlay=True)
        sync()

    scorer = model.scorer()

    def naive(images):
        for p in scorer.parameters():
            p.requires_grad_(True)
        try:
            policy_heatmaps(model, images, "firearms", with_overlay=False)
            sync()
        finally:
            for p in scorer.parameters():
                p.requires_grad_(False)

    results = {}
    for batch, rounds in batches.items():
        model.config = ModelConfig(architecture=ARCH, device=device, batch_size=batch)
        images = photos[:batch]
        for fn in (embed, cam, cam_overlay, naive):  # warm-up
            fn(images)
        series = {"embed": [], "gradcam": [], "gradcam_with_overlay": [], "gradcam_naive": []}
        for r in range(rounds):
            series["embed"] += per_image_ms(embed, images, 1)
            series["gradcam"] += per_image_ms(cam, images, 1)
            series["gradcam_with_overlay"] += per_image_ms(cam_overlay, images, 1)
            if r % 3 == 0:  # the slow reference: fewer rounds
                series["gradcam_naive"] += per_image_ms(naive, images, 1)
        med = {k: round(statistics.median(v), 2) for k, v in series.items()}
        results[f"batch_{batch}"] = {
            "per_image_ms": med,
            "rounds": {k: len(v) for k, v in series.items()},
            "ratio_gradcam_over_embed": round(med["gradcam"] / med["embed"], 2),
            "ratio_gradcam_with_overlay_over_embed": round(
                med["gradcam_with_overlay"] / med["embed"], 2
            ),
            "ratio_naive_gradcam_over_embed": round(med["gradcam_naive"] / med["embed"], 2),
            "gradcam_images_per_s": round(1000 / med["gradcam"], 1),
            "embed_images_per_s": round(1000 / med["embed"], 1),
        }
        print(device, batch, results[f"batch_{batch}"], flush=True)
    return results


def main() -> None:
    import argparse

    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="torch CPU threads (default: all cores; use 1 on a busy machine, where spinning "
        "OpenMP threads lose their core and every op waits)",
    )
    args = parser.parse_args()
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    load_before = [round(v, 2) for v in os.getloadavg()]
    cpu = measure("cpu", {1: 12, 8: 4})
    gpu = None
    if torch.cuda.is_available():
        gpu = measure("cuda", {1: 50, 8: 30, 64: 10})

    figures = {
        "cpu": {
            b: r["per_image_ms"] | {"gradcam_images_per_s": r["gradcam_images_per_s"]}
            for b, r in cpu.items()
        }
    }
    baseline = {
        "cpu": {b: {"embed_per_image_ms": r["per_image_ms"]["embed"]} for b, r in cpu.items()}
    }
    ratio = {
        "cpu": {
            b: {
                "gradcam_over_embed": r["ratio_gradcam_over_embed"],
                "gradcam_with_overlay_over_embed": r["ratio_gradcam_with_overlay_over_embed"],
                "naive_gradcam_over_embed": r["ratio_naive_gradcam_over_embed"],
                "aim_met": r["ratio_gradcam_over_embed"] <= 2.5,
            }
            for b, r in cpu.items()
        }
    }
    if gpu:
        figures["gpu"] = {
            b: r["per_image_ms"] | {"gradcam_images_per_s": r["gradcam_images_per_s"]}
            for b, r in gpu.items()
        }
        baseline["gpu"] = {
            b: {"embed_per_image_ms": r["per_image_ms"]["embed"]} for b, r in gpu.items()
        }
        ratio["gpu"] = {
            b: {"gradcam_over_embed": r["ratio_gradcam_over_embed"]} for b, r in gpu.items()
        }
    write_result(
        "gradcam",
        figures=figures,
        baseline=baseline,
        ratio=ratio,
        aims={"gradcam_over_embed": "<= 2.5"},
        notes=(
            f"{ARCH} with random weights and 6 random policy heads; 320x240 synthetic listing "
            f"photos resized to 224. CPU: torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads. "
            "Per-image ms = median over alternating rounds of one batch each. 'gradcam' freezes "
            "the tower and makes the target layer's output the only leaf that needs a gradient, so "
            "backward runs through the last block and the head only; 'gradcam_naive' lets every "
            "parameter require a gradient (full backward) for reference. "
            + ("GPU measured too. " if gpu else "No GPU was lent to this run: CPU only. ")
            + f"Load average at the start {load_before} (the machine is shared with other work); "
            f"process niceness {os.nice(0)}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}. "
            f"Whole run: {time.perf_counter() - started:.0f} s."
        ),
    )


if __name__ == "__main__":
    main()
