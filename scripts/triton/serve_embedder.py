"""Serve the stand-in image embedder (embedder_model.py) on a real Triton Inference Server.

Runs in its own virtual environment (nvidia-pytriton pins numpy<2); create it with
scripts/triton/setup.sh, then:

    scripts/triton/run.sh [--http-port 8000] [--grpc-port 8001] [--metrics-port 8002]

(run.sh sets LD_LIBRARY_PATH to this Python's own lib directory, which Triton's Python
backend needs; otherwise it links the system's libpython.) The portal then uses it with
TRITON_URL=http://127.0.0.1:8000 or grpc://127.0.0.1:8001.

Model: "image_embedder", input IMAGE uint8 [-1, 224, 224, 3], output EMBEDDING float32
[-1, 512], dynamic batching up to 64. Stops cleanly on SIGTERM or SIGINT.
"""

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import embedder_model as em


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    @batch
    def infer(IMAGE):
        return {em.OUTPUT_NAME: em.embed(IMAGE)}

    config = TritonConfig(
        http_address=args.address,
        http_port=args.http_port,
        grpc_address=args.address,
        grpc_port=args.grpc_port,
        metrics_address=args.address,
        metrics_port=args.metrics_port,
        allow_gpu_metrics=False,
        log_verbose=1 if args.verbose else 0,
        exit_timeout_secs=5,
    )
    triton = Triton(config=config)

    def stop(signum, frame):
        triton.stop()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with triton:
        triton.bind(
            model_name=em.MODEL_NAME,
            infer_func=infer,
            inputs=[
                Tensor(name=em.INPUT_NAME, dtype=np.uint8, shape=(em.IMAGE_SIZE, em.IMAGE_SIZE, 3))
            ],
            outputs=[Tensor(name=em.OUTPUT_NAME, dtype=np.float32, shape=(em.EMBED_DIM,))],
            config=ModelConfig(
                max_batch_size=args.max_batch_size,
                batcher=DynamicBatcher(max_queue_delay_microseconds=500),
            ),
            strict=True,
        )
        print(
            f"serving {em.MODEL_NAME} on http://{args.address}:{args.http_port} "
            f"and grpc://{args.address}:{args.grpc_port}",
            flush=True,
        )
        triton.serve()


if __name__ == "__main__":
    main()
