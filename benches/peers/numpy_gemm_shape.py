"""One shape of numpy's OpenBLAS sgemm on one thread, for alternating with `simdnn bench gemm`.

`../shared/peers/bench_numpy_gemm.py` times every shape in about a minute; on a noisy VM the
two sides must run seconds apart instead. Same computation (float32, C-contiguous, output
preallocated), median of 15 samples of about 0.2 GFLOP each.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE v/bin/python benches/peers/numpy_gemm_shape.py M K N [--transpose-a]
"""
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) != 3:
        sys.exit("usage: numpy_gemm_shape.py M K N [--transpose-a]")
    m, k, n = map(int, args)
    transpose_a = "--transpose-a" in sys.argv
    rng = np.random.default_rng(0)
    # A transposed view: the weight gradient's X^T, with X (k x m) contiguous.
    a = rng.standard_normal((k, m), dtype=np.float32).T if transpose_a else rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    c = np.empty((m, n), np.float32)
    with threadpool_limits(1):
        reps = max(1, int(2e8 / (2 * m * n * k)))
        samples = []
        for _ in range(15):
            start = time.perf_counter()
            for _ in range(reps):
                np.matmul(a, b, out=c)
            samples.append((time.perf_counter() - start) / reps)
    median = sorted(samples)[len(samples) // 2]
    print(f"openblas m={m} k={k} n={n} transpose_a={transpose_a}: {2 * m * n * k / median / 1e9:.1f} GFLOP/s, {median * 1e6:.2f} us per call (median)")


if __name__ == "__main__":
    main()
