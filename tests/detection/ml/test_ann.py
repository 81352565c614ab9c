"""Versioned FAISS HNSW artifacts: recall, manifest, reload, immutability."""

import json
import os

import numpy as np
import pytest

from detection.ml.ann import (
    HnswParams,
    build_index,
    exact_search,
    list_versions,
    load_index,
    recall_at_k,
    synthetic_embeddings,
)

N, DIM = 4000, 512


@pytest.fixture(scope="module")
def data():
    return synthetic_embeddings(N, DIM, clusters=80, seed=1), synthetic_embeddings(
        200, DIM, clusters=80, seed=2
    )


@pytest.fixture(scope="module")
def artifact(data, tmp_path_factory):
    vectors, _ = data
    root = tmp_path_factory.mktemp("indexes")
    return build_index(
        vectors, np.arange(N) + 1000, root, HnswParams(M=16, ef_construction=64, ef_search=48)
    )


def test_exact_search_is_exact():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((500, 16)).astype(np.float32)
    q = rng.standard_normal((5, 16)).astype(np.float32)
    positions, sims = exact_search(base, q, 10)
    full = q @ base.T
    for row, pos, sim in zip(full, positions, sims, strict=True):
        assert pos.tolist() == np.argsort(-row)[:10].tolist()
        np.testing.assert_allclose(sim, np.sort(row)[::-1][:10], rtol=1e-6)


def test_recall_at_10_on_held_out_queries_is_high(data, artifact):
    vectors, queries = data
    ids, sims = artifact.search(queries, 10)
    truth, _ = exact_search(vectors, queries, 10)
    assert recall_at_k(ids - 1000, truth, 10) >= 0.95
    assert (np.diff(sims, axis=1) <= 1e-6).all()  # best first


def test_manifest_records_what_the_build_was(artifact):
    manifest = json.loads((artifact.path / "manifest.json").read_text())
    assert manifest == artifact.manifest
    assert manifest["size"] == N
    assert manifest["dim"] == DIM
    assert manifest["params"] == {"M": 16, "ef_construction": 64, "ef_search": 48}
    assert manifest["metric"] == "inner_product"
    assert manifest["build_seconds"] > 0
    assert manifest["memory_bytes"] > N * DIM * 4  # the vectors plus the graph
    assert manifest["recall_at_10"] >= 0.95
    assert manifest["recall_queries"] == 200
    assert manifest["recall_method"].startswith("sampled vectors held out")
    assert set(manifest["files"]) == {"index.faiss", "ids.npy"}
    assert artifact.path.name == manifest["version"]


def test_loading_gives_the_same_results(data, artifact):
    _, queries = data
    loaded = load_index(artifact.path)
    a_ids, a_sims = artifact.search(queries, 10)
    b_ids, b_sims = loaded.search(queries, 10)
    assert np.array_equal(a_ids, b_ids)
    np.testing.assert_allclose(a_sims, b_sims)
    assert loaded.version == artifact.version


def test_every_vector_is_in_the_index_under_its_own_id(data, artifact):
    vectors, _ = data
    picks = [0, 17, N - 1]
    ids, sims = artifact.search(vectors[picks], 1)
    assert ids[:, 0].tolist() == [p + 1000 for p in picks]
    np.testing.assert_allclose(sims[:, 0], 1.0, atol=1e-5)


def test_artifacts_are_never_overwritten(data, artifact, tmp_path):
    vectors, _ = data
    root = artifact.path.parent
    with pytest.raises(FileExistsError):
        build_index(vectors[:100], np.arange(100), root, version=artifact.version)
    second = build_index(vectors[:500], np.arange(500), root)
    assert second.path != artifact.path
    assert second.version != artifact.version
    assert load_index(artifact.path).size == N  # the first version is untouched
    assert [m["version"] for m in list_versions(root)] == [artifact.version, second.version]
    assert not os.access(artifact.path / "index.faiss", os.W_OK) or os.geteuid() == 0
    assert oct((artifact.path / "index.faiss").stat().st_mode & 0o777) == "0o444"
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp")]


def test_a_tampered_file_is_refused(data, tmp_path):
    vectors, _ = data
    art = build_index(vectors[:300], np.arange(300), tmp_path)
    ids_file = art.path / "ids.npy"
    os.chmod(ids_file, 0o644)
    np.save(ids_file, np.arange(300) + 1)
    with pytest.raises(ValueError, match="does not match its manifest"):
        load_index(art.path)


def test_string_ids_and_short_results(tmp_path):
    vectors = synthetic_embeddings(5, 32, clusters=2)
    art = build_index(vectors, [f"case-{i}" for i in range(5)], tmp_path)
    ids, sims = art.search(vectors[:1], 8)
    assert ids[0, 0] == "case-0"
    assert list(ids[0, 5:]) == ["", "", ""]
    assert np.isinf(sims[0, 5:]).all()
    assert art.manifest["recall_at_10"] is None  # too small to hold any out


def test_unnormalised_vectors_are_refused(tmp_path):
    with pytest.raises(ValueError, match="L2-normalised"):
        build_index(np.ones((10, 8), np.float32), np.arange(10), tmp_path)
