"""The stand-in embedding model that scripts/triton/serve_embedder.py serves (numpy only).

It is NOT a neural network and NOT the detection tier's model: it is a fixed, deterministic
function with the same interface, so the portal's Triton path can be run and checked end to
end on a real Triton server without any weights:

    IMAGE (uint8, batch × 224 × 224 × 3, RGB)
      → average-pool to 16 × 16 × 3, scale to [0, 1], subtract 0.5
      → multiply by a fixed Gaussian matrix (768 × 512, numpy seed 20240611)
      → L2-normalise
    EMBEDDING (float32, batch × 512)

Similar pictures get similar embeddings (it is a random projection of a thumbnail), which
is enough for the portal's k-NN path to show sensible neighbours in a demo.
Both the server and the tests import this file, so they cannot disagree about the maths.
"""

import numpy as np

MODEL_NAME = "image_embedder"
MODEL_VERSION = 1
INPUT_NAME = "IMAGE"
OUTPUT_NAME = "EMBEDDING"
IMAGE_SIZE = 224
EMBED_DIM = 512
POOL = 16
SEED = 20240611

_projection = None


def projection() -> np.ndarray:
    global _projection
    if _projection is None:
        rng = np.random.default_rng(SEED)
        _projection = rng.standard_normal((POOL * POOL * 3, EMBED_DIM)).astype(np.float32)
    return _projection


def embed(images: np.ndarray) -> np.ndarray:
    """uint8 (n, 224, 224, 3) → float32 (n, 512), rows L2-normalised."""
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise ValueError(f"expected (n, {IMAGE_SIZE}, {IMAGE_SIZE}, 3) images, got {x.shape}")
    step = IMAGE_SIZE // POOL
    pooled = x.astype(np.float32).reshape(x.shape[0], POOL, step, POOL, step, 3).mean(axis=(2, 4))
    features = (pooled / 255.0 - 0.5).reshape(x.shape[0], -1)
    out = features @ projection()
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out.astype(np.float32)
