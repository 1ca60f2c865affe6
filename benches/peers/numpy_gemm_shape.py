"""One shape of numpy's OpenBLAS sgemm, for alternating with `simdnn bench gemm`.

`../shared/peers/bench_numpy_gemm.py` times every shape in about a minute; on a noisy VM the
two sides must run seconds apart instead. This runs that script's own `bench` (same operands,
same timing: median of 5 samples of at least 0.15 s) on one shape and one thread.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE v/bin/python benches/peers/numpy_gemm_shape.py M K N [--transpose-a]
"""
import os
import sys

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "peers"))
from bench_numpy_gemm import bench  # noqa: E402


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) != 3:
        sys.exit("usage: numpy_gemm_shape.py M K N [--transpose-a]")
    m, k, n = map(int, args)
    # "AT": A as the weight gradient's X^T, a transposed view of a contiguous X.
    layout = "AT" if "--transpose-a" in sys.argv else ""
    with threadpool_limits(limits=1, user_api="blas"):
        median, gflops, _ = bench(m, k, n, layout, np.random.default_rng(0))
    print(f"openblas m={m} k={k} n={n} layout={layout or 'plain'}: {gflops:.1f} GFLOP/s, {median * 1e6:.2f} us per call (median)")


if __name__ == "__main__":
    main()
