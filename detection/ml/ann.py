"""Versioned, immutable nearest-neighbour index artifacts (FAISS HNSW, inner product).

The reference index of known violations is built from L2-normalised embeddings, so inner
product is cosine similarity. A build writes a new folder ``<root>/<version>/`` holding

- ``index.faiss``: the FAISS HNSW graph with the vectors (flat float32 storage),
- ``ids.npy``: the caller's id for each vector, by position,
- ``manifest.json``: version, size, dim, parameters, build seconds, memory bytes, recall@10
  against exact search on held-out queries, and the sha256 of each file.

A version folder is written under a temporary name and renamed into place once complete,
its files are made read-only, and a build never reuses an existing folder: a new build is a
new version, and rolling back is pointing at an older folder (the caller records which one
is active). `load_index` checks the files against the manifest's hashes.

Exact NumPy search (`exact_search`) is the baseline for recall and for the benchmark.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

MANIFEST = "manifest.json"
INDEX_FILE = "index.faiss"
IDS_FILE = "ids.npy"
FORMAT = "faiss-hnsw-ip/1"


@dataclass(frozen=True)
class HnswParams:
    """HNSW graph parameters.

    The defaults favour recall for reference indexes of up to a few hundred thousand vectors
    (at 100k clustered 512-d vectors: held-out recall@10 of about 1.0, about a minute to build
    on 2 cores). bench/knn.py uses M=16, efConstruction=32 to build 1M vectors in minutes and
    tunes efSearch for recall@10 ≥ 0.95; every build records its own recall in the manifest.
    """

    M: int = 32  # links per node; memory grows by about 8·M bytes per vector
    ef_construction: int = 80  # candidate list while building: build time vs graph quality
    ef_search: int = 64  # candidate list while searching: latency vs recall (changeable at load)

    def __post_init__(self) -> None:
        if self.M < 2 or self.ef_construction < 1 or self.ef_search < 1:
            raise ValueError(f"invalid HNSW parameters: {self}")


def exact_search(base: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force inner-product top-k: (positions (n, k) int64, similarities (n, k) float32)."""
    base = np.asarray(base, dtype=np.float32)
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    k = min(k, base.shape[0])
    sims = queries @ base.T
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    top_sims = np.take_along_axis(sims, top, axis=1)
    order = np.argsort(-top_sims, axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1), np.take_along_axis(top_sims, order, axis=1)


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int = 10) -> float:
    """Mean fraction of each query's true top-k that `found`'s top-k contains."""
    hits = 0
    for f, t in zip(found[:, :k], truth[:, :k], strict=True):
        hits += len(set(f.tolist()) & set(t.tolist()) - {-1})
    return hits / float(truth[:, :k].size)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _new_version() -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return f"{stamp}-{uuid.uuid4().hex[:8]}"


def _faiss() -> Any:
    import faiss

    return faiss


@dataclass
class IndexArtifact:
    path: Path
    manifest: dict[str, Any]
    index: Any  # faiss.IndexHNSWFlat
    ids: np.ndarray

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def size(self) -> int:
        return int(self.manifest["size"])

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    def set_ef_search(self, ef_search: int) -> None:
        self.index.hnsw.efSearch = int(ef_search)

    def search_positions(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if q.shape[1] != self.dim:
            raise ValueError(f"queries are {q.shape[1]}-d, the index is {self.dim}-d")
        sims, positions = self.index.search(q, int(k))
        return positions, sims

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids (n, k), similarities (n, k) float32), best first; where fewer than k exist the
        row is padded with id -1 (or "" for string ids) and similarity -inf."""
        positions, sims = self.search_positions(queries, k)
        missing = positions < 0
        ids = self.ids[np.where(missing, 0, positions)] if self.size else np.zeros_like(positions)
        if missing.any():
            ids = ids.copy()
            ids[missing] = "" if ids.dtype.kind == "U" else -1
            sims = np.where(missing, -np.inf, sims).astype(np.float32)
        return ids, sims


def build_index(
    vectors: np.ndarray,
    ids: np.ndarray | list[Any],
    out_dir: str | Path,
    params: HnswParams | None = None,
    *,
    version: str | None = None,
    holdout_queries: np.ndarray | None = None,
    eval_queries: int = 200,
    seed: int = 0,
    threads: int | None = None,
    extra: dict[str, Any] | None = None,
) -> IndexArtifact:
    """Build a new index version under `out_dir` (the root of all versions).

    Recall@10 is measured against exact search on held-out queries: `holdout_queries` when
    given (vectors not in the index), otherwise `eval_queries` sampled vectors that are kept
    out of the graph while measuring and added afterwards. `extra` goes into the manifest.
    Raises FileExistsError if `version` already exists: artifacts are never overwritten.
    """
    faiss = _faiss()
    params = params or HnswParams()
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError("vectors must be (n, d)")
    id_array = np.asarray(ids)
    if id_array.shape[0] != x.shape[0]:
        raise ValueError(f"{id_array.shape[0]} ids for {x.shape[0]} vectors")
    if id_array.dtype.kind == "O":
        id_array = id_array.astype(str)
    if id_array.dtype.kind not in "iuU":
        raise ValueError("ids must be integers or strings")
    if id_array.dtype.kind in "iu":
        id_array = id_array.astype(np.int64)
    norms = np.linalg.norm(x, axis=1) if len(x) else np.ones(0)
    if len(x) and not np.allclose(norms, 1.0, atol=1e-3):
        raise ValueError("vectors must be L2-normalised (inner product = cosine similarity)")

    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    version = version or _new_version()
    final = root / version
    if final.exists():
        raise FileExistsError(f"index version {version} already exists at {final}")
    tmp = root / f".tmp-{version}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    tmp.mkdir()
    try:
        if threads:
            faiss.omp_set_num_threads(int(threads))
        index = faiss.IndexHNSWFlat(x.shape[1], params.M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params.ef_construction
        # Held-out recall: unless the caller brings queries, `eval_queries` sampled vectors are
        # left out, recall is measured with them as queries, and then they are added too (so
        # the index holds everything; positions are reordered with the ids to match).
        picks = np.zeros(0, dtype=np.int64)
        if holdout_queries is None and len(x) > 2 * eval_queries and eval_queries > 0:
            picks = np.random.default_rng(seed).choice(len(x), size=eval_queries, replace=False)
            rest = np.setdiff1d(np.arange(len(x)), picks)
            order = np.concatenate([rest, picks])
            x, id_array = x[order], id_array[order]
        n_first = len(x) - len(picks)
        started = time.perf_counter()
        if n_first:
            index.add(x[:n_first])
        build_seconds = time.perf_counter() - started
        index.hnsw.efSearch = params.ef_search
        if holdout_queries is not None:
            recall, n_eval = _recall(index, x, holdout_queries)
            recall_method = "caller's held-out queries"
        elif len(picks):
            recall, n_eval = _recall(index, x[:n_first], x[n_first:])
            recall_method = "sampled vectors held out of the graph, added after measuring"
        else:
            recall, n_eval, recall_method = None, 0, "too few vectors to hold any out"
        if len(picks):
            started = time.perf_counter()
            index.add(x[n_first:])
            build_seconds += time.perf_counter() - started

        faiss.write_index(index, str(tmp / INDEX_FILE))
        with open(tmp / IDS_FILE, "wb") as fh:
            np.save(fh, id_array, allow_pickle=False)
        index_bytes = (tmp / INDEX_FILE).stat().st_size
        manifest = {
            "format": FORMAT,
            "version": version,
            "created_at": datetime.now(UTC).isoformat(),
            "size": int(x.shape[0]),
            "dim": int(x.shape[1]),
            "metric": "inner_product",
            "params": asdict(params),
            "build_seconds": round(build_seconds, 3),
            # The loaded index holds the vectors and the graph as serialised: its memory is
            # the file's size, plus the ids array.
            "memory_bytes": int(index_bytes + id_array.nbytes),
            "recall_at_10": recall,
            "recall_method": recall_method,
            "recall_queries": n_eval,
            "faiss_version": faiss.__version__,
            "files": {
                INDEX_FILE: _sha256(tmp / INDEX_FILE),
                IDS_FILE: _sha256(tmp / IDS_FILE),
            },
        }
        if extra:
            manifest["extra"] = extra
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        for name in (INDEX_FILE, IDS_FILE, MANIFEST):
            os.chmod(tmp / name, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
        if final.exists():
            raise FileExistsError(f"index version {version} already exists at {final}")
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return IndexArtifact(path=final, manifest=manifest, index=index, ids=id_array)


def _recall(index: Any, base: np.ndarray, queries: np.ndarray) -> tuple[float | None, int]:
    k = 10
    q = np.ascontiguousarray(queries, dtype=np.float32)
    if len(q) == 0 or len(base) == 0:
        return None, 0
    truth, _ = exact_search(base, q, k)
    _, found = index.search(q, min(k, len(base)))
    return round(recall_at_k(found, truth, k), 4), len(q)


def load_index(
    path: str | Path, *, verify: bool = True, ef_search: int | None = None
) -> IndexArtifact:
    """Load a version folder; with `verify`, its files must match the manifest's sha256."""
    faiss = _faiss()
    folder = Path(path)
    manifest = json.loads((folder / MANIFEST).read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{folder} is not a {FORMAT} artifact")
    if verify:
        for name, expected in manifest["files"].items():
            actual = _sha256(folder / name)
            if actual != expected:
                raise ValueError(f"{folder / name} does not match its manifest (sha256 {actual})")
    index = faiss.read_index(str(folder / INDEX_FILE))
    index.hnsw.efSearch = int(ef_search or manifest["params"]["ef_search"])
    ids = np.load(folder / IDS_FILE, allow_pickle=False)
    return IndexArtifact(path=folder, manifest=manifest, index=index, ids=ids)


def list_versions(root: str | Path) -> list[dict[str, Any]]:
    """Manifests of the complete versions under `root`, oldest first."""
    out = []
    for folder in sorted(Path(root).glob("*/")):
        if folder.name.startswith(".") or not (folder / MANIFEST).exists():
            continue
        out.append(json.loads((folder / MANIFEST).read_text()))
    return sorted(out, key=lambda m: m["created_at"])


def synthetic_embeddings(
    n: int,
    dim: int = 512,
    *,
    clusters: int = 1000,
    latent_dim: int = 48,
    noise: float = 0.05,
    seed: int = 0,
    basis_seed: int = 12345,
) -> np.ndarray:
    """Clustered, L2-normalised test vectors shaped like real embedding sets.

    Real image embeddings vary along a few dozen directions, not all 512: points are drawn
    around `clusters` centres in a `latent_dim`-d space, mapped into `dim` dimensions by a
    fixed random orthonormal basis (`basis_seed`, shared by base and queries), plus a little
    isotropic noise. Float32, generated in chunks to keep memory at the output's size.
    """
    latent_dim = min(latent_dim, dim)
    basis_rng = np.random.default_rng(basis_seed)
    basis, _ = np.linalg.qr(basis_rng.normal(size=(dim, latent_dim)))
    basis = basis.T.astype(np.float32)  # (latent, dim)
    centres = basis_rng.normal(size=(clusters, latent_dim)).astype(np.float32)
    spread = basis_rng.uniform(0.3, 0.8, size=clusters).astype(np.float32)
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    step = 65536
    for start in range(0, n, step):
        m = min(step, n - start)
        which = rng.integers(clusters, size=m)
        latent = centres[which] + spread[which, None] * rng.standard_normal(
            (m, latent_dim), dtype=np.float32
        )
        block = latent @ basis
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        block += (noise / np.sqrt(dim)) * rng.standard_normal((m, dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start : start + m] = block
    return out
