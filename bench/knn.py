"""k-NN over reference embeddings: FAISS HNSW (detection.ml.ann) beside exact NumPy search.

For 100k and 1M L2-normalised 512-d float32 vectors (clustered synthetic data shaped like
embedding sets: `detection.ml.ann.synthetic_embeddings`), in one run:

- build a real index artifact with `build_index` (build seconds, memory, its own held-out
  recall@10 from the manifest);
- pick efSearch honestly: sweep it on 300 *tuning* queries and take the smallest value whose
  recall@10 there is ≥ 0.95, then report latency and recall on 1000 separate *evaluation*
  queries (all held out: none of them is in the index);
- single-query latency p50/p99 of the index (one search call per query, one thread) and of
  exact search (`exact_search`: one matrix-vector product over all vectors + argpartition,
  one BLAS thread too) on the same queries.

Aim (issue 3): HNSW p99 ≤ exact p99 / 50 at recall@10 ≥ 0.95.
Run: .venv/bin/python -m bench.knn [--sizes 100000,1000000]
"""

from __future__ import annotations

import os

# Before torch/faiss load OpenMP: on a busy machine, threads that spin while waiting for a
# core that another process holds make every parallel op many times slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import gc
import shutil
import tempfile
import time

import numpy as np
from threadpoolctl import threadpool_limits

from bench._common import summary_ms, write_result
from detection.ml.ann import (
    HnswParams,
    build_index,
    exact_search,
    recall_at_k,
    synthetic_embeddings,
)

DIM = 512
K = 10
EF_SWEEP = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
# efConstruction 32 keeps the 1M build to a few minutes on 2 cores; the recall it costs is
# bought back at query time by the efSearch sweep (which is what the aim measures).
PARAMS = HnswParams(M=16, ef_construction=32, ef_search=64)
PASSES = 3  # timing passes over the same queries; the least disturbed one is reported


def rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def exact_topk_batched(
    base: np.ndarray, queries: np.ndarray, k: int, block: int = 131072
) -> np.ndarray:
    """Ground truth for many queries without a (queries × n) matrix: running top-k per block."""
    best_sims = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(queries), k), dtype=np.int64)
    for start in range(0, len(base), block):
        positions, sims = exact_search(base[start : start + block], queries, k)
        cand_ids = np.concatenate([best_ids, positions + start], axis=1)
        cand_sims = np.concatenate([best_sims, sims], axis=1)
        order = np.argsort(-cand_sims, axis=1, kind="stable")[:, :k]
        best_ids = np.take_along_axis(cand_ids, order, axis=1)
        best_sims = np.take_along_axis(cand_sims, order, axis=1)
    return best_ids


def one_size(n: int, tmp_root: str) -> dict:
    import faiss

    clusters = max(100, n // 100)
    t0 = time.perf_counter()
    base = synthetic_embeddings(n, DIM, clusters=clusters, seed=1)
    tuning = synthetic_embeddings(300, DIM, clusters=clusters, seed=2)
    evaluation = synthetic_embeddings(1000, DIM, clusters=clusters, seed=3)
    generate_s = time.perf_counter() - t0
    print(f"[{n}] data {generate_s:.1f} s", flush=True)

    t0 = time.perf_counter()
    truth_tuning = exact_topk_batched(base, tuning, K)
    truth_eval = exact_topk_batched(base, evaluation, K)
    print(f"[{n}] ground truth {time.perf_counter() - t0:.1f} s", flush=True)

    params = PARAMS
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    rss_before = rss_bytes()
    artifact = build_index(base, np.arange(n), tmp_root, params, eval_queries=200)
    rss_after = rss_bytes()
    print(f"[{n}] built in {artifact.manifest['build_seconds']:.1f} s", flush=True)

    # Serving searches one query per request: one thread per search.
    faiss.omp_set_num_threads(1)
    sweep = []
    chosen = None
    for ef in EF_SWEEP:
        artifact.set_ef_search(ef)
        found, _ = artifact.search(tuning, K)
        recall = recall_at_k(found, truth_tuning, K)
        sweep.append({"ef_search": ef, "tuning_recall_at_10": round(recall, 4)})
        if recall >= 0.95:
            chosen = ef
            break
    chosen = chosen or EF_SWEEP[-1]
    artifact.set_ef_search(chosen)

    # Warm up both paths. Timings are taken in passes over the same queries; this machine is
    # shared, so each path's reported figures are from its pass with the lowest p99 (the same
    # rule for both), and every pass's p99 is kept.
    for q in evaluation[:20]:
        artifact.search(q[None], K)
        exact_search(base, q[None], K)
    n_exact = 300 if n <= 200_000 else 100
    gc.disable()
    try:
        hnsw_passes, exact_passes, found_rows = [], [], []
        hnsw_cpu, exact_cpu = [], []
        for pass_no in range(PASSES):
            times = []
            for q in evaluation:
                started, cpu_started = time.perf_counter(), time.thread_time()
                found, _ = artifact.search(q[None], K)
                times.append(time.perf_counter() - started)
                hnsw_cpu.append(time.thread_time() - cpu_started)
                if pass_no == 0:
                    found_rows.append(found[0])
            hnsw_passes.append(times)
        # One thread per query for both paths: a server answers concurrent requests a core
        # each, and a busy machine punishes spinning BLAS threads.
        with threadpool_limits(limits=1):
            for _ in range(PASSES if n <= 200_000 else 2):
                times = []
                for q in evaluation[:n_exact]:
                    started, cpu_started = time.perf_counter(), time.thread_time()
                    exact_search(base, q[None], K)
                    times.append(time.perf_counter() - started)
                    exact_cpu.append(time.thread_time() - cpu_started)
                exact_passes.append(times)
    finally:
        gc.enable()
    recall_eval = recall_at_k(np.array(found_rows), truth_eval, K)
    hnsw_times = min(hnsw_passes, key=lambda t: summary_ms(t)["p99_ms"])
    exact_times = min(exact_passes, key=lambda t: summary_ms(t)["p99_ms"])

    hnsw = summary_ms(hnsw_times)
    exact = summary_ms(exact_times)
    result = {
        "n": n,
        "dim": DIM,
        "clusters": clusters,
        "params": {"M": params.M, "ef_construction": params.ef_construction, "ef_search": chosen},
        "build_seconds": artifact.manifest["build_seconds"],
        "index_memory_bytes": artifact.manifest["memory_bytes"],
        "rss_growth_bytes_during_build": rss_after - rss_before,
        "vectors_bytes": int(base.nbytes),
        "manifest_recall_at_10": artifact.manifest["recall_at_10"],
        "ef_sweep": sweep,
        "hnsw": {
            **hnsw,
            "recall_at_10": round(recall_eval, 4),
            "threads": 1,
            "p99_ms_of_each_pass": [summary_ms(t)["p99_ms"] for t in hnsw_passes],
            "cpu_time": summary_ms(hnsw_cpu),
        },
        "exact": {
            **exact,
            "recall_at_10": 1.0,
            "threads": 1,
            "p99_ms_of_each_pass": [summary_ms(t)["p99_ms"] for t in exact_passes],
            "cpu_time": summary_ms(exact_cpu),
        },
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "p99_ratio_exact_over_hnsw": round(exact["p99_ms"] / hnsw["p99_ms"], 1),
        "p50_ratio_exact_over_hnsw": round(exact["p50_ms"] / hnsw["p50_ms"], 1),
        "data_seconds": round(generate_s, 1),
    }
    print(f"[{n}] {result['hnsw']} vs exact {result['exact']}", flush=True)
    del artifact, base
    gc.collect()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100000,1000000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    started = time.perf_counter()
    load_before = [round(v, 2) for v in os.getloadavg()]
    results = {}
    tmp_root = tempfile.mkdtemp(prefix="knn-bench-")
    try:
        for n in sizes:
            results[str(n)] = one_size(n, os.path.join(tmp_root, str(n)))
            shutil.rmtree(os.path.join(tmp_root, str(n)), ignore_errors=True)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)

    import faiss

    figures = {
        size: {
            "hnsw_p50_ms": r["hnsw"]["p50_ms"],
            "hnsw_p99_ms": r["hnsw"]["p99_ms"],
            "hnsw_recall_at_10": r["hnsw"]["recall_at_10"],
            "ef_search": r["params"]["ef_search"],
            "M": r["params"]["M"],
            "ef_construction": r["params"]["ef_construction"],
            "build_seconds": r["build_seconds"],
            "index_memory_mib": round(r["index_memory_bytes"] / 2**20, 1),
            "rss_growth_mib_during_build": round(r["rss_growth_bytes_during_build"] / 2**20, 1),
            "vectors_mib": round(r["vectors_bytes"] / 2**20, 1),
            "manifest_recall_at_10": r["manifest_recall_at_10"],
            "hnsw_latency": r["hnsw"],
            "load_average_after": r["load_average_after"],
            "ef_sweep_on_tuning_queries": r["ef_sweep"],
        }
        for size, r in results.items()
    }
    baseline = {
        size: {
            "exact_p50_ms": r["exact"]["p50_ms"],
            "exact_p99_ms": r["exact"]["p99_ms"],
            "exact_recall_at_10": 1.0,
            "exact_latency": r["exact"],
        }
        for size, r in results.items()
    }
    ratio = {
        size: {
            "exact_p99_over_hnsw_p99": r["p99_ratio_exact_over_hnsw"],
            "exact_p50_over_hnsw_p50": r["p50_ratio_exact_over_hnsw"],
            "aim_met": bool(
                r["p99_ratio_exact_over_hnsw"] >= 50 and r["hnsw"]["recall_at_10"] >= 0.95
            ),
        }
        for size, r in results.items()
    }
    write_result(
        "knn",
        figures=figures,
        baseline=baseline,
        ratio=ratio,
        aims={"p99": "HNSW p99 <= exact p99 / 50", "recall_at_10": ">= 0.95 on held-out queries"},
        notes=(
            "Synthetic clustered 512-d vectors (n/100 clusters in a 48-d latent space, fixed "
            "random basis, small isotropic noise), L2-normalised, inner product. efSearch is the "
            "smallest value reaching recall@10 >= 0.95 on 300 tuning queries; latency and recall "
            "are on 1000 other held-out queries. HNSW searches one query per call on one thread; "
            "exact search is NumPy (matrix-vector + argpartition), also one thread per query, on "
            "the first 300 (100k) or 100 (1M) of the same queries. Latencies: each path timed in "
            "3 passes (exact at 1M: 2), the pass with the lowest p99 reported for each, all "
            "passes' p99 kept; the thread CPU time of each query is reported beside the "
            "wall-clock figures (wall-clock tails on a shared machine include "
            "waiting for a core). Build times are FAISS HNSW on all cores through "
            f"detection.ml.ann.build_index (faiss {faiss.__version__}). "
            f"Whole run: {time.perf_counter() - started:.0f} s; load average at the start "
            f"{load_before} (the machine is shared with other work); "
            f"process niceness {os.nice(0)}, "
            f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}."
        ),
    )


if __name__ == "__main__":
    main()
