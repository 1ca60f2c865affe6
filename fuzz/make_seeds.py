#!/usr/bin/env python3
"""Writes the committed seed corpus, fuzz/corpus/<target>/seed-*, deterministically.

Run from anywhere: `python3 fuzz/make_seeds.py`. The model files follow FORMAT.md (and
`simdnn::format::to_bytes`): header, payload, CRC-32 of everything before it.
"""

import math
import pathlib
import random
import struct
import zlib

ROOT = pathlib.Path(__file__).resolve().parent / "corpus"
RECORD_BYTES = 1 + 3 * 32 * 32


def write(target, name, data):
    d = ROOT / target
    d.mkdir(parents=True, exist_ok=True)
    (d / f"seed-{name}").write_bytes(bytes(data))


def f32s(values):
    return b"".join(struct.pack("<f", v) for v in values)


# gemm: the fields of `Input` in declaration order, one byte each, then the u64 seed.
def gemm_input(m, k, n, ta, tb, pads, alpha, beta, act, bias, mc, kc, nc, pack_a, pack_b, parallel, mag, seed):
    head = [m, k, n, ta, tb, *pads, alpha, beta, act, bias, mc, kc, nc, pack_a, pack_b, parallel, mag]
    return bytes(head) + struct.pack("<Q", seed)


write("gemm", "hidden-elu-bias", gemm_input(32, 70, 70, 0, 0, (0, 0, 0), 1, 0, 3, 1, 3, 39, 2, 0, 0, 0, 0, 1))
write("gemm", "edges-transposed", gemm_input(17, 41, 33, 1, 1, (1, 2, 3), 3, 2, 5, 1, 1, 6, 1, 1, 2, 0, 2, 2))
write("gemm", "parallel-beta", gemm_input(70, 9, 65, 1, 0, (0, 3, 1), 2, 1, 6, 0, 0, 0, 0, 2, 1, 1, 3, 3))
write("gemm", "k0", gemm_input(9, 0, 31, 0, 1, (2, 0, 0), 1, 3, 7, 1, 2, 0, 1, 1, 1, 0, 1, 4))

# activations: [activation, alpha] then (x, dy) f32 pairs, including every special value.
specials = [0.0, -0.0, 1e-30, -1e-30, 1e-45, -1e-45, 1.1754944e-38, 1e-4, -1e-4, 0.5, -0.5, 1.0, -1.0,
            9.0, -9.0, 20.0, -20.0, 88.0, -88.0, 89.0, -104.0, -110.0, 1e10, -1e10, 3.4e38, -3.4e38,
            math.inf, -math.inf, math.nan]
pairs = []
for i, x in enumerate(specials):
    pairs += [x, [1.0, -0.25, 3.0][i % 3]]
for act in range(8):
    write("activations", f"specials-{act}", bytes([act, 63]) + f32s(pairs))
rng = random.Random(1)
write("activations", "range-elu-tail", bytes([3, 127]) + f32s(rng.uniform(-30, 30) for _ in range(2 * 37)))


# model_file: a valid file per preprocessing kind, and two broken ones.
def model_file(input_dim, preprocess, layers):
    p = struct.pack("<I", input_dim)
    if preprocess[0] == "scale":
        p += bytes([0]) + f32s([preprocess[1]])
    else:
        p += bytes([1]) + f32s(preprocess[1]) + f32s(preprocess[2])
    p += struct.pack("<I", len(layers))
    for n_in, n_out, code, param, weights, bias in layers:
        p += bytes([1]) + struct.pack("<II", n_in, n_out) + bytes([code]) + f32s([param]) + bytes([0])
        p += f32s(weights) + f32s(bias)
    body = b"\x89SDN\r\n\x1a\n" + struct.pack("<IIQ", 1, 0, len(p)) + p
    return body + struct.pack("<I", zlib.crc32(body))


rng = random.Random(2)
def w(n):
    return [round(rng.gauss(0, 0.5), 3) for _ in range(n)]


valid = model_file(4, ("scale", 1 / 255), [(4, 3, 3, 1.0, w(12), w(3)), (3, 2, 7, 0.0, w(6), w(2))])
write("model_file", "valid-scale-elu-softmax", valid)
write("model_file", "valid-standardise-3-layers", model_file(
    3, ("standardise", [120.0, 110.5, 100.25], [0.02, 0.015, 0.0175]),
    [(3, 5, 2, 0.2, w(15), w(5)), (5, 4, 6, 0.0, w(20), w(4)), (4, 3, 7, 0.0, w(12), w(3))]))
write("model_file", "truncated", valid[:-9])
write("model_file", "bad-magic", b"\x89SDM" + valid[4:])


# Versions 2 (batch norm, dropout, alpha dropout) and 3 (bf16 and int8 weights), as
# `format::to_bytes_as` writes them (tests/fuzz_regressions.rs checks they parse and re-encode
# byte for byte).
def container(version, payload):
    body = b"\x89SDN\r\n\x1a\n" + struct.pack("<IIQ", version, 0, len(payload)) + payload
    return body + struct.pack("<I", zlib.crc32(body))


def dense(n_in, n_out, code, param, dtype, weights, bias):
    return bytes([1]) + struct.pack("<II", n_in, n_out) + bytes([code]) + f32s([param]) + bytes([dtype]) + weights + f32s(bias)


def batch_norm(n, code, param, momentum, epsilon):
    gamma, beta = [1.0 + x for x in w(n)], w(n)
    mean, var = w(n), [0.5 + abs(x) for x in w(n)]
    head = bytes([2]) + struct.pack("<II", n, n) + bytes([code]) + f32s([param, momentum, epsilon])
    return head + f32s(gamma + beta + mean + var)


def dropout(n, rate, alpha=False):
    return bytes([4 if alpha else 3]) + struct.pack("<II", n, n) + f32s([rate])


def bf16s(values):
    # Values with at most 8 significant bits, so the top half of each f32 is exact.
    return b"".join(struct.pack("<I", struct.unpack("<I", struct.pack("<f", v))[0])[2:] for v in values)


def int8s(n_in, n_out, scale_exponents):
    # Power-of-two scales and a +-127 in every column: re-quantising gives the same bytes.
    scales = [2.0 ** e for e in scale_exponents]
    q = [rng.randrange(-127, 128) for _ in range(n_in * n_out)]
    for j in range(n_out):
        q[(j % n_in) * n_out + j] = 127 if j % 2 else -127
    return f32s(scales) + bytes(v & 0xFF for v in q)


def payload(input_dim, layers):
    return struct.pack("<I", input_dim) + bytes([0]) + f32s([1 / 255]) + struct.pack("<I", len(layers)) + b"".join(layers)


write("model_file", "valid-v2-batchnorm-dropout", container(2, payload(4, [
    batch_norm(4, 0, 0.0, 0.99, 1e-3),
    dense(4, 5, 3, 1.0, 0, f32s(w(20)), w(5)),
    batch_norm(5, 3, 1.0, 0.9, 1e-5),
    dropout(5, 0.25),
    dense(5, 6, 4, 0.0, 0, f32s(w(30)), w(6)),
    dropout(6, 0.1, alpha=True),
    dense(6, 3, 7, 0.0, 0, f32s(w(18)), w(3)),
])))
write("model_file", "valid-v3-bf16", container(3, payload(5, [
    dense(5, 17, 1, 0.0, 1, bf16s([round(x * 16) / 16 for x in w(85)]), w(17)),
    dense(17, 2, 7, 0.0, 1, bf16s([round(x * 16) / 16 for x in w(34)]), w(2)),
])))
write("model_file", "valid-v3-int8", container(3, payload(3, [
    dense(3, 18, 2, 0.25, 2, int8s(3, 18, [-7 - j % 3 for j in range(18)]), w(18)),
    dropout(18, 0.5),
    dense(18, 4, 7, 0.0, 2, int8s(18, 4, [-6, -5, -8, -7]), w(4)),
])))
write("model_file", "bad-v3-dtype-in-v2", container(2, payload(3, [
    dense(3, 2, 7, 0.0, 1, bf16s([0.5] * 6), w(2)),
])))

# cifar_records: 4 control bytes, then 3073-byte records.
rng = random.Random(3)
def record(label):
    return bytes([label]) + bytes(rng.randrange(256) for _ in range(RECORD_BYTES - 1))


write("cifar_records", "one-record-scale", bytes([0, 0, 0, 0]) + record(3))
write("cifar_records", "three-records-standardise", bytes([2, 0, 1, 2]) + record(0) + record(9) + record(5))
write("cifar_records", "bad-label", bytes([1, 0, 0, 0]) + record(10))
write("cifar_records", "short-last-record", bytes([0, 1, 2, 3]) + record(7) + record(1)[:100])

# schedule_spec: `--schedule` values as text, every form (README's examples), plus edge cases
# the parser must reject or round-trip.
for name, spec in [
    ("1cycle", "1cycle:0.05"),
    ("1cycle-momentum", "1cycle:0.05,momentum"),
    ("exponential", "exponential:0.1@20"),
    ("piecewise", "piecewise:5=1e-3,15=1e-4"),
    ("plateau", "plateau"),
    ("plateau-args", "plateau:0.5@3"),
    ("constant", "constant"),
    ("case-limits", "PieceWise:1=1e-10,999999=10,1000000=0.5"),
    ("exponential-tiny", "exponential:1e-45@1000000"),
    ("bad-piecewise", "piecewise:15=1e-4,5=1e-3"),
    ("bad-unknown", "cosine:0.1"),
]:
    write("schedule_spec", name, spec.encode())


# softmax_xent: rows, classes, scale, offset, ties, specials (one byte each, as
# `SoftmaxXentInput` decodes them: rows % 17, 1 + classes % 70, indices into SOFTMAX_SCALES
# [1, 0.01, 8, 100, 1e4, 1e30, f32::MAX, 1e-30] and SOFTMAX_OFFSETS [0, 10, -10, 1e4, -1e4,
# 1e7, 1e30, -1e30]), the u64 seed, then one label byte per row.
def softmax_xent_input(rows, classes, scale, offset, ties, specials, seed, labels):
    assert len(labels) == rows and 1 <= classes <= 70
    return bytes([rows, classes - 1, scale, offset, ties, specials]) + struct.pack("<Q", seed) + bytes(labels)


NEG_INF, NAN, POS_INF = 1, 2, 4
ODD_ROWS, ALL_MASKED_ROW0 = 0x40, 0x80


def specials(kinds, per_row, flags=0):
    return kinds | per_row << 3 | flags


# Row lengths around the 16-lane vector: 1, 15, 16, 17, 33 and 70 classes.
for n, rows in [(1, 3), (15, 7), (16, 5), (17, 16), (33, 4), (70, 9)]:
    write("softmax_xent", f"classes-{n}", softmax_xent_input(rows, n, 0, 0, 0, 0, n, [(r * 7) % n for r in range(rows)]))
write("softmax_xent", "no-rows", softmax_xent_input(0, 10, 0, 0, 0, 0, 1, []))
write("softmax_xent", "spread-1e30", softmax_xent_input(8, 33, 5, 0, 0, 0, 2, [r * 5 % 33 for r in range(8)]))
write("softmax_xent", "spread-1e-30", softmax_xent_input(4, 17, 7, 0, 0, 0, 3, [0, 16, 8, 3]))
write("softmax_xent", "spread-8-offset-10", softmax_xent_input(6, 10, 2, 1, 0, 0, 4, [1, 2, 3, 4, 5, 6]))
write("softmax_xent", "ties", softmax_xent_input(16, 20, 0, 0, 3, 0, 5, [r % 20 for r in range(16)]))
write("softmax_xent", "near-ties", softmax_xent_input(16, 20, 0, 0, 7, 0, 6, [r % 20 for r in range(16)]))
write("softmax_xent", "masked-neg-inf", softmax_xent_input(8, 17, 2, 0, 0, specials(NEG_INF, 7), 7, list(range(8))))
write("softmax_xent", "nan-and-inf-odd-rows",
      softmax_xent_input(6, 33, 0, 0, 1, specials(NEG_INF | NAN | POS_INF, 2, ODD_ROWS), 8, [0, 1, 2, 3, 4, 5]))
write("softmax_xent", "all-masked-row",
      softmax_xent_input(3, 16, 0, 0, 0, specials(NEG_INF, 1, ALL_MASKED_ROW0), 9, [0, 5, 15]))
# Large common offsets and spreads up to f32::MAX: the loss must keep its log and not overflow
# (the kernel summed `max + log(sum) - x[label]` in f32 until the regressions in
# regressions/softmax_xent/ caught it).
write("softmax_xent", "offset-1e4", softmax_xent_input(5, 17, 0, 3, 0, 0, 10, [0, 3, 6, 9, 16]))
write("softmax_xent", "offset-minus-1e30-ties", softmax_xent_input(4, 33, 0, 7, 2, 0, 11, [0, 1, 31, 32]))
write("softmax_xent", "spread-f32-max", softmax_xent_input(7, 16, 6, 0, 0, 0, 12, [r * 2 for r in range(7)]))
write("softmax_xent", "offset-1e7-spread-1e4-masked",
      softmax_xent_input(9, 70, 4, 5, 5, specials(NEG_INF, 3), 13, [r * 8 for r in range(9)]))


# int8_gemv: [n_in: u16][n_out - 1 (mod 150)][fill][seed: u64][scale: f32][zero point], then the
# payload (the Payload/PayloadBits fills' source, and f32s for quantize_u8 and min_max).
# Fills: 0 seeded, 1 seeded extremes, 2 payload bytes, 3 payload bits, 4 all 255 x -128,
# 5 all 255 x 127.
def int8_gemv(n_in, n_out, fill, seed, scale=1.0, zero_point=0, payload=b""):
    return struct.pack("<HBBQfB", n_in, n_out - 1, fill, seed, scale, zero_point) + payload


rng = random.Random(4)
# Ties (x.5 rounds to even), the clamp at 0 and 255, every special float, subnormals.
quant_specials = [0.0, -0.0, 0.5, 1.5, 2.5, -0.5, 254.5, 255.5, 256.0, -1.0, 1e-45, -1e-45, 1.1754942e-38,
                  math.inf, -math.inf, math.nan, 3.4e38, -3.4e38, 127.49999, 127.5, 127.50001]
quant_values = f32s(quant_specials + [rng.uniform(-300, 300) for _ in range(40)])
write("int8_gemv", "empty", int8_gemv(0, 1, 0, 0))
write("int8_gemv", "3x17-seeded-specials", int8_gemv(3, 17, 0, 1, 1.0, 0, quant_values))
write("int8_gemv", "4x16-payload", int8_gemv(4, 16, 2, 2, 0.5, 128, bytes(rng.randrange(256) for _ in range(80))))
write("int8_gemv", "5x128-extremes", int8_gemv(5, 128, 1, 3, 2.0 / 255, 7, quant_values))
write("int8_gemv", "31x129-bits", int8_gemv(31, 129, 3, 4, 1e-3, 255, bytes(rng.randrange(256) for _ in range(37))))
write("int8_gemv", "257x130-all-min", int8_gemv(257, 130, 4, 5, 1.0, 0, quant_values))
write("int8_gemv", "300x150-all-max", int8_gemv(300, 150, 5, 6))
write("int8_gemv", "101x15-subnormal-scale", int8_gemv(101, 15, 0, 7, 1e-45, 3, quant_values))
write("int8_gemv", "64x33-huge-scale", int8_gemv(64, 33, 0, 8, 3.4e38, 200, quant_values))
# min_max: the extremes in the first 16-lane chunk, NaN in the same lanes of the next one, then
# ordinary values (a kernel that lets NaN into a lane forgets what the lane held before).
nan_lanes = [rng.uniform(-2, 2) for _ in range(48)]
nan_lanes[3], nan_lanes[19], nan_lanes[10], nan_lanes[26] = -1000.0, math.nan, 1000.0, math.nan
write("int8_gemv", "16x16-nan-after-extremes", int8_gemv(16, 16, 2, 9, 8.0, 125, f32s(nan_lanes)))


# infer_dense: 24 header bytes (see `InferDenseInput` in src/checks.rs), then the image.
# Widths are written as n - 1 (decoded 1 + b % 40). Hidden activations index ACTIVATIONS:
# 0 identity, 1 relu, 2 leaky relu, 3 elu, 4 elu:0.5, 5 selu, 6 tanh, 7 logistic.
def infer_dense(layers, input_dim, widths, classes, acts, dropout=0, rate=0, pre=0, factor=0, mags=0,
                static=0, calibration=(3, 3, 3), seed=0, image=b""):
    w = list(widths) + [1] * (2 - len(widths))
    a = list(acts) + [0] * (2 - len(acts))
    head = [layers - 1, input_dim - 1, w[0] - 1, w[1] - 1, classes - 1, a[0], a[1], dropout, rate, pre, factor,
            mags, static, *calibration]
    return bytes(head) + struct.pack("<Q", seed) + bytes(image)


def image(n):
    return bytes(rng.randrange(256) for _ in range(n))


write("infer_dense", "one-layer-unit-scale", infer_dense(1, 9, [], 5, [], seed=1, image=image(9)))
write("infer_dense", "three-layers-dropout-standardise", infer_dense(
    3, 37, [33, 17], 10, [5, 6], dropout=1 | (2 << 2), rate=30, pre=2, mags=1 << 2, seed=2, image=image(37)))
write("infer_dense", "fitted-constant-features", infer_dense(
    2, 12, [20], 3, [1], pre=3, mags=2 << 2, seed=3, image=image(12)))
write("infer_dense", "bytes-into-first-static", infer_dense(
    3, 40, [40, 16], 7, [3, 7], pre=0, static=8, calibration=(3, 3, 7), seed=4, image=image(40)))
write("infer_dense", "negative-scale-clipping", infer_dense(
    2, 17, [16], 4, [2], pre=1, factor=0x80 | (5 << 4) | 3, mags=3 | (3 << 2) | 16, static=2,
    calibration=(0, 1, 0), seed=5, image=image(5)))
write("infer_dense", "alpha-dropout-first", infer_dense(
    2, 5, [129 % 40], 2, [4], dropout=2, rate=99, pre=1, factor=(6 << 4) | 15, mags=2, static=8 | 5, seed=6,
    image=image(5)))
write("infer_dense", "one-class-zero-columns", infer_dense(
    2, 3, [1], 1, [0], mags=16 | (1 << 2), seed=7, image=b""))
