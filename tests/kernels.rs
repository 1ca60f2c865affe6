//! SIMD kernels against their scalar twins (`simdnn::kernels::reference`) over awkward sizes.
//! Every failure in a grid is collected before the test fails, so one run shows the pattern.

use simdnn::kernels::bf16::Bf16Kernel;
use simdnn::kernels::gemm::{A_PANEL_ROWS, Blocking, Epilogue, MR, MatMut, MatRef, NR, Packing, gemm_with};
use simdnn::kernels::gemm_bf16::{Bf16Ref, Operand, gemm_bf16_with};
use simdnn::kernels::quant::bf16_from_f32;
use simdnn::kernels::softmax::{softmax_cross_entropy, softmax_cross_entropy_grad};
use simdnn::kernels::vector::{activation_backward_with_bias_grad, dot};
use simdnn::kernels::{Activation, reference};
use simdnn::rng::{normal, seeded};

fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = seeded(seed, 99);
    (0..len).map(|_| normal(&mut rng) as f32).collect()
}

/// Small blocks so that modest matrices cross every block edge.
fn small_blocking(pack: Packing) -> Blocking {
    Blocking { mc: 2 * MR, kc: 7, nc: 2 * NR, pack_a: pack, pack_b: pack, parallel_min_flops: usize::MAX }
}

/// Compares one product against the reference; the bound grows with k:
/// |err| <= 4 k eps (|A||B|)_ij + eps |C| (example 4 of the design notes).
#[allow(clippy::too_many_arguments)]
fn check_gemm(
    blocking: &Blocking,
    m: usize,
    k: usize,
    n: usize,
    ta: bool,
    tb: bool,
    alpha: f32,
    beta: f32,
    bias: bool,
    act: Activation,
    failures: &mut Vec<String>,
) {
    let a_data = random(m * k, 1 + (m * 31 + k) as u64);
    let b_data = random(k * n, 2 + (k * 17 + n) as u64);
    let a = if ta { MatRef::new(&a_data, k, m).t() } else { MatRef::new(&a_data, m, k) };
    let b = if tb { MatRef::new(&b_data, n, k).t() } else { MatRef::new(&b_data, k, n) };
    let label = format!("m={m} k={k} n={n} ta={ta} tb={tb}");
    check_views(blocking, a, b, alpha, beta, bias, act, &label, failures);
}

/// [`check_gemm`] on given views of A and B.
#[allow(clippy::too_many_arguments)]
fn check_views(
    blocking: &Blocking,
    a: MatRef<'_>,
    b: MatRef<'_>,
    alpha: f32,
    beta: f32,
    bias: bool,
    act: Activation,
    label: &str,
    failures: &mut Vec<String>,
) {
    let (m, k, n) = (a.rows(), a.cols(), b.cols());
    let (bias_data, c0) = bias_and_c(m, n, beta);
    let bias = bias.then_some(&bias_data[..]);
    let mut expected = c0.clone();
    reference::gemm(alpha, a, b, beta, &mut MatMut::new(&mut expected, m, n), bias, act);
    let mut got = c0.clone();
    gemm_with(blocking, alpha, a, b, beta, MatMut::new(&mut got, m, n), Epilogue { bias, activation: act });
    for i in 0..m {
        for j in 0..n {
            let (_, scale) = magnitudes(a, b, i, j, alpha, beta, c0[i * n + j]);
            let tol = 4.0 * (k as f64 + 2.0) * f32::EPSILON as f64 * scale;
            let (e, g) = (expected[i * n + j], got[i * n + j]);
            let within = (e as f64 - g as f64).abs() <= tol; // false for NaN too
            if !within {
                failures.push(format!("{label} alpha={alpha} beta={beta} {act}: C[{i},{j}] = {g}, expected {e}"));
                return;
            }
        }
    }
}

/// A bias of `n` values and C's starting contents (NaN when beta is 0: C must not be read).
fn bias_and_c(m: usize, n: usize, beta: f32) -> (Vec<f32>, Vec<f32>) {
    (random(n, 5), if beta == 0.0 { vec![f32::NAN; m * n] } else { random(m * n, 3) })
}

/// `(sum_p |a(i,p) b(p,j)|, |alpha| that + |beta c| + 1)`: the scale a product's error bound
/// grows with.
fn magnitudes(a: MatRef<'_>, b: MatRef<'_>, i: usize, j: usize, alpha: f32, beta: f32, c: f32) -> (f64, f64) {
    let abs: f64 = (0..a.cols()).map(|p| (a.at(i, p) as f64 * b.at(p, j) as f64).abs()).sum();
    let c_term = if beta == 0.0 { 0.0 } else { (beta as f64 * c as f64).abs() };
    (abs, alpha.abs() as f64 * abs + c_term + 1.0)
}

fn awkward(block: usize) -> Vec<usize> {
    let mut v =
        vec![0, 1, MR - 1, MR, MR + 1, A_PANEL_ROWS - 1, A_PANEL_ROWS + 1, block - 1, block, block + 1, 2 * block + 3];
    v.sort();
    v.dedup();
    v
}

#[test]
fn gemm_matches_reference_over_awkward_sizes_and_transposes() {
    let mut failures = Vec::new();
    for pack in [Packing::Auto, Packing::Always, Packing::Never] {
        let blocking = small_blocking(pack);
        for &m in &awkward(blocking.mc) {
            for &k in &[0, 1, 6, 7, 8, 15] {
                for &n in &[1, NR - 1, NR, NR + 1, 2 * NR + 5] {
                    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                        check_gemm(&blocking, m, k, n, ta, tb, 1.0, 0.0, false, Activation::Identity, &mut failures);
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn gemm_alpha_beta_bias_and_every_activation() {
    let mut failures = Vec::new();
    let blocking = small_blocking(Packing::Auto);
    for act in Activation::ELEMENT_WISE {
        for (alpha, beta) in [(1.0, 0.0), (0.5, 1.0), (-2.0, 0.25)] {
            for (m, k, n) in [(MR + 3, 15, NR + 7), (2 * MR + 1, 9, 2 * NR + 1), (1, 1, 1)] {
                for (ta, tb) in [(false, false), (true, true)] {
                    check_gemm(&blocking, m, k, n, ta, tb, alpha, beta, true, act, &mut failures);
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn gemm_default_blocking_on_layer_shapes_and_large_k() {
    let mut failures = Vec::new();
    let blocking = Blocking { parallel_min_flops: usize::MAX, ..Blocking::DEFAULT };
    for (m, k, n, ta, tb) in [
        (32, 3072, 100, false, false), // first layer forward
        (3072, 32, 100, true, false),  // first layer weight gradient
        (1000, 32, 100, true, false),  // its narrow last panel with a partial block of rows
        (32, 100, 3072, false, true),  // input gradient through the first layer
        (33, 100, 100, false, false),
        (300, 513, 129, false, false),
        (40, 2500, 70, false, false),   // three blocks of k
        (203, 1100, 300, false, false), // A packed (many rows and columns), two blocks of k
        (130, 60, 257, false, true),    // A packed, B transposed, a last panel of 1 column
    ] {
        check_gemm(&blocking, m, k, n, ta, tb, 1.0, 0.0, true, Activation::ELU, &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The narrow last panel of a transposed A (computed along m in 64-row blocks of up to 4
/// columns, stored through an in-register transpose when full): full and partial row blocks,
/// 1-7 edge columns, alpha, beta and the epilogue.
#[test]
fn gemm_narrow_panels_of_a_transposed_a() {
    let mut failures = Vec::new();
    let blocking = Blocking { parallel_min_flops: usize::MAX, ..Blocking::DEFAULT };
    for m in [16, 64, 200] {
        for n in [NR + 1, NR + 3, NR + 4, NR + 5, NR + 7] {
            for (alpha, beta) in [(1.0, 0.0), (-0.5, 0.75)] {
                check_gemm(&blocking, m, 9, n, true, false, alpha, beta, true, Activation::ELU, &mut failures);
                check_gemm(&blocking, m, 9, n, true, false, alpha, beta, false, Activation::Identity, &mut failures);
            }
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

/// A transposed A whose columns lie a multiple of 4 KiB apart (the first layer's x^T) is
/// copied block by block with another stride before the tiles read it: row blocks of every
/// size (one row joining the last block), k blocks, narrow edges, alpha, beta and the
/// epilogue. The floats between the view's columns are NaN, so a read outside it shows.
#[test]
fn gemm_transposed_a_with_aliasing_columns() {
    let mut failures = Vec::new();
    let default = Blocking { parallel_min_flops: usize::MAX, ..Blocking::DEFAULT };
    for blocking in [default, small_blocking(Packing::Auto)] {
        for (m, lda) in [(1, 1024), (9, 1024), (17, 2048), (100, 1024), (250, 3072)] {
            for k in [1, 7, 50, 300] {
                let mut a_data = vec![f32::NAN; k * lda];
                for (kk, column) in a_data.chunks_exact_mut(lda).enumerate() {
                    column[..m].copy_from_slice(&random(m, 10 + kk as u64));
                }
                let a = MatRef::strided(&a_data, m, k, 1, lda);
                for n in [4, NR + 3, 3 * NR + 4] {
                    let b_data = random(k * n, 2 + (k * 17 + n) as u64);
                    let b = MatRef::new(&b_data, k, n);
                    let label = format!("m={m} k={k} n={n} lda={lda} mc={}", blocking.mc);
                    check_views(&blocking, a, b, 1.0, 0.0, false, Activation::Identity, &label, &mut failures);
                    check_views(&blocking, a, b, -0.5, 0.75, true, Activation::ELU, &label, &mut failures);
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

/// A last panel of 1-4 columns when A's rows are contiguous along k (forward passes, input
/// gradients): dot products along k, 4 depths x 4 columns per FMA, with B's edge packed in
/// 4 x 4 blocks from its rows or (a transposed B) its columns, in place beside the packed
/// panels (m = 40) or not; whole blocks of k and a partial tail, row groups of 8 and fewer.
#[test]
fn gemm_narrow_panels_as_dot_products() {
    let mut failures = Vec::new();
    let blocking = Blocking { parallel_min_flops: usize::MAX, ..Blocking::DEFAULT };
    for m in [1, 3, 4, 9, 25, 40] {
        for k in [16, 37, 100, 400] {
            for n in [1, 4, NR + 1, NR + 3, 3 * NR + 4] {
                for tb in [false, true] {
                    check_gemm(&blocking, m, k, n, false, tb, 1.0, 0.0, false, Activation::Identity, &mut failures);
                    check_gemm(&blocking, m, k, n, false, tb, -0.5, 0.75, true, Activation::Selu, &mut failures);
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn parallel_gemm_is_bit_identical_to_serial() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    // (203, 70, 260) and (130, 1100, 300) pack A into 12-row panels (rows split at multiples
    // of 8 put the first part's last rows in a shorter tile that sums them differently).
    for (m, k, n) in [(32, 3072, 100), (3072, 32, 100), (8, 200, 300), (129, 70, 65), (203, 70, 260), (130, 1100, 300)]
    {
        let a = random(m * k, 1);
        let b = random(k * n, 2);
        let bias = random(n, 3);
        let epi = Epilogue { bias: Some(&bias), activation: Activation::ELU };
        let product = |parallel_min_flops: usize| {
            let mut c = vec![0.0; m * n];
            let blocking = Blocking { parallel_min_flops, ..Blocking::DEFAULT };
            let (a, b) = (MatRef::new(&a, m, k), MatRef::new(&b, k, n));
            gemm_with(&blocking, 1.0, a, b, 0.0, MatMut::new(&mut c, m, n), epi);
            c
        };
        let serial = product(usize::MAX);
        let parallel = pool.install(|| product(0));
        assert_eq!(serial, parallel, "shape ({m},{k},{n})");
    }
}

/// The bf16 kernels this CPU runs: the portable one always, AVX-512 BF16 where present.
fn bf16_kernels() -> Vec<Bf16Kernel> {
    [Bf16Kernel::Portable, Bf16Kernel::Avx512Bf16].into_iter().filter(|k| k.available()).collect()
}

/// One bf16 product against its twin: bit for bit with the identity (the same sums in the same
/// order), within the activation's error bound otherwise; and, as a check on the twin too,
/// within bf16's rounding of the exact product: |err| <= 2^-7 (|A||B|)_ij + 4 k eps scale.
#[allow(clippy::too_many_arguments)]
fn check_gemm_bf16(
    kernel: Bf16Kernel,
    a: MatRef<'_>,
    b: MatRef<'_>,
    alpha: f32,
    beta: f32,
    bias: bool,
    act: Activation,
    label: &str,
    failures: &mut Vec<String>,
) {
    let (m, k, n) = (a.rows(), a.cols(), b.cols());
    let (bias_data, c0) = bias_and_c(m, n, beta);
    let bias = bias.then_some(&bias_data[..]);
    let mut twin = c0.clone();
    reference::gemm_bf16(alpha, a, b, beta, &mut MatMut::new(&mut twin, m, n), bias, act);
    let mut exact = c0.clone();
    reference::gemm(alpha, a, b, beta, &mut MatMut::new(&mut exact, m, n), bias, act);
    let mut got = c0.clone();
    gemm_bf16_with(kernel, alpha, a, b, beta, MatMut::new(&mut got, m, n), Epilogue { bias, activation: act });
    let label = format!("{kernel:?} {label} alpha={alpha} beta={beta} bias={} {act}", bias.is_some());
    // Operands given already rounded (row-major, as a trainer keeps its weights) take other
    // packing paths to the same words: the same bits.
    let rounded = |x: MatRef<'_>| -> Vec<u16> {
        (0..x.rows() * x.cols()).map(|e| bf16_from_f32(x.at(e / x.cols(), e % x.cols()))).collect()
    };
    let (a16, b16) = (rounded(a), rounded(b));
    for (ra, rb) in [(true, false), (false, true), (true, true)] {
        let a_op: Operand<'_> = if ra { Bf16Ref::new(&a16, m, k).into() } else { a.into() };
        let b_op: Operand<'_> = if rb { Bf16Ref::new(&b16, k, n).into() } else { b.into() };
        let mut pre = c0.clone();
        gemm_bf16_with(
            kernel,
            alpha,
            a_op,
            b_op,
            beta,
            MatMut::new(&mut pre, m, n),
            Epilogue { bias, activation: act },
        );
        if let Some(e) = (0..m * n).find(|&e| pre[e].to_bits() != got[e].to_bits()) {
            failures.push(format!("{label}, rounded A {ra} B {rb}: C[{e}] = {}, from f32 {}", pre[e], got[e]));
            return;
        }
    }
    for i in 0..m {
        for j in 0..n {
            let (t, g, e) = (twin[i * n + j], got[i * n + j], exact[i * n + j]);
            let same = if act == Activation::Identity {
                t.to_bits() == g.to_bits()
            } else {
                (t - g).abs() <= 1e-6 * (1.0 + t.abs()) // false for NaN too
            };
            let (abs, scale) = magnitudes(a, b, i, j, alpha, beta, c0[i * n + j]);
            let near = (t as f64 - e as f64).abs()
                <= alpha.abs() as f64 * abs / 128.0 + 4.0 * (k as f64 + 2.0) * f32::EPSILON as f64 * scale;
            if !same || !near {
                failures.push(format!("{label}: C[{i},{j}] = {g}, twin {t}, exact {e}"));
                return;
            }
        }
    }
}

/// Every kernel over awkward sizes (odd depths, tiles of 1-8 rows, 1-16 and 17-32 column
/// panels, more than one 256-column block of B) and every transpose (A row-major is packed row
/// by row, any other A pair by pair, and then a last panel of 1-4 columns is computed along m,
/// in 64-row blocks and a partial 16), C filled with NaN when beta is 0.
#[test]
fn gemm_bf16_matches_its_twin_over_awkward_sizes_and_transposes() {
    let mut failures = Vec::new();
    for kernel in bf16_kernels() {
        for m in [0, 1, 2, 3, 4, 5, 8, 9, 17, 70] {
            for k in [0, 1, 2, 3, 16, 33] {
                for n in [1, 15, 16, 17, 32, 33, 100, 2 * 256 + 5] {
                    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                        let a_data = random(m * k, 1 + (m * 31 + k) as u64);
                        let b_data = random(k * n, 2 + (k * 17 + n) as u64);
                        let a = if ta { MatRef::new(&a_data, k, m).t() } else { MatRef::new(&a_data, m, k) };
                        let b = if tb { MatRef::new(&b_data, n, k).t() } else { MatRef::new(&b_data, k, n) };
                        let label = format!("m={m} k={k} n={n} ta={ta} tb={tb}");
                        check_gemm_bf16(kernel, a, b, 1.0, 0.0, false, Activation::Identity, &label, &mut failures);
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

/// Alpha, beta, the bias and every activation, on the training shapes that use the kernel
/// (the first layer's forward part and weight gradient part) and small ones.
#[test]
fn gemm_bf16_alpha_beta_bias_and_every_activation() {
    let mut failures = Vec::new();
    for kernel in bf16_kernels() {
        for (m, k, n, ta) in [(32, 1536, 100, false), (1536, 32, 100, true), (9, 7, 33, false), (9, 7, 33, true)] {
            let a_data = random(m * k, 7);
            let b_data = random(k * n, 8);
            let a = if ta { MatRef::new(&a_data, k, m).t() } else { MatRef::new(&a_data, m, k) };
            let b = MatRef::new(&b_data, k, n);
            let label = format!("m={m} k={k} n={n} ta={ta}");
            for (alpha, beta) in [(1.0, 0.0), (0.5, 1.0), (-2.0, 0.25)] {
                check_gemm_bf16(kernel, a, b, alpha, beta, true, Activation::Identity, &label, &mut failures);
            }
            for act in Activation::ELEMENT_WISE {
                check_gemm_bf16(kernel, a, b, 1.0, 0.0, true, act, &label, &mut failures);
            }
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

/// ULP distance between two finite floats of the same sign region.
fn ulps(a: f32, b: f32) -> u32 {
    let key = |x: f32| {
        let i = x.to_bits() as i32;
        if i < 0 { i32::MIN.wrapping_sub(i) } else { i }
    };
    (key(a) as i64 - key(b) as i64).unsigned_abs().min(u32::MAX as u64) as u32
}

#[test]
fn activations_within_4_ulp_or_1e7_of_the_scalar_twin() {
    // 200k points over [-30, 30], plus special values; odd length exercises the tail.
    let mut xs: Vec<f32> = (0..200_001).map(|i| -30.0 + 60.0 * i as f32 / 200_000.0).collect();
    xs.extend([0.0, -0.0, 1e-30, -1e-30, 88.0, -88.0, -104.0, 1e-4, -1e-4, f32::MIN_POSITIVE]);
    for act in Activation::ELEMENT_WISE {
        let mut ys = xs.clone();
        act.forward(&mut ys);
        let mut worst = (0u32, 0f32);
        for (&x, &y) in xs.iter().zip(&ys) {
            let r = reference::activation(act, x);
            let u = ulps(y, r);
            assert!(u <= 4 || (y - r).abs() <= 1e-7, "{act}({x}) = {y}, reference {r} ({u} ulp)");
            if u > worst.0 {
                worst = (u, x);
            }
        }
        eprintln!("{act}: worst {} ulp at x = {}", worst.0, worst.1);
    }
}

#[test]
fn activation_derivatives_match_the_twin_and_finite_differences() {
    for act in Activation::ELEMENT_WISE {
        for i in 0..400 {
            let x = -6.0 + 12.0 * (i as f64 + 0.5) / 400.0;
            if matches!(act, Activation::Relu | Activation::LeakyRelu { .. }) && x.abs() < 1e-3 {
                continue; // kink
            }
            let y = reference::activation(act, x as f32);
            let mut g = [1.0f32];
            act.backward(&[y], &mut g);
            let twin = reference::activation_derivative_from_output(act, y);
            assert!((g[0] - twin).abs() <= 1e-6 * twin.abs().max(1.0), "{act}'({x}): {} vs twin {twin}", g[0]);
            let h = 1e-3;
            let fd = (reference::activation(act, (x + h) as f32) as f64
                - reference::activation(act, (x - h) as f32) as f64)
                / (2.0 * h);
            assert!(
                (g[0] as f64 - fd).abs() <= 2e-3 * fd.abs().max(1.0),
                "{act}'({x}) = {} but finite difference gives {fd}",
                g[0]
            );
        }
    }
}

#[test]
fn fused_backward_matches_separate_steps() {
    for n in [1, 10, 16, 17, 100] {
        let rows = 5;
        let mut ys = random(rows * n, 4);
        Activation::ELU.forward(&mut ys);
        let dys = random(rows * n, 6);
        let mut fused = dys.clone();
        let mut bias_grad = vec![0.5; n];
        activation_backward_with_bias_grad(Activation::ELU, &ys, &mut fused, n, &mut bias_grad);
        for j in 0..n {
            let mut sum = 0.5f32;
            for r in 0..rows {
                let dz = dys[r * n + j] * reference::activation_derivative_from_output(Activation::ELU, ys[r * n + j]);
                assert!((fused[r * n + j] - dz).abs() <= 1e-6, "dz[{r},{j}]");
                sum += dz;
            }
            assert!((bias_grad[j] - sum).abs() <= 1e-5, "bias grad {j}: {} vs {sum}", bias_grad[j]);
        }
    }
}

/// Within f32's rounding of the sum's terms: `|err| <= len * eps * sum |a b|` (each of at
/// most `len` additions rounds once), over lengths around one and two vectors, and zero.
#[test]
fn dot_matches_reference() {
    for len in [0, 1, 15, 16, 17, 31, 32, 33, 100, 1536] {
        let (a, b) = (random(len, 8), random(len, 9));
        let exact = reference::dot(&a, &b);
        let magnitude: f64 = a.iter().zip(&b).map(|(&a, &b)| (a as f64 * b as f64).abs()).sum();
        let got = dot(&a, &b) as f64;
        let bound = (len as f64 + 1.0) * f32::EPSILON as f64 * magnitude;
        assert!((got - exact).abs() <= bound, "len {len}: {got} vs {exact} (bound {bound})");
        assert_eq!(dot(&a, &b).to_bits(), dot(&b, &a).to_bits(), "len {len}: products differ by operand order");
    }
    assert!(dot(&[f32::NAN], &[1.0]).is_nan());
}

#[test]
fn softmax_cross_entropy_matches_reference_and_gradient() {
    // Rows of 1 class, of a vector's width and either side of one and two (16 lanes), and more.
    for n in [1, 2, 10, 15, 16, 17, 33, 40, 70] {
        let rows = 7;
        let logits = random(rows * n, n as u64).iter().map(|x| x * 5.0).collect::<Vec<_>>();
        let labels: Vec<u8> = (0..rows).map(|r| (r * 3 % n) as u8).collect();
        let mut expected = vec![0.0; rows * n];
        let (ref_loss, ref_correct) = reference::softmax_cross_entropy(&logits, n, &labels, &mut expected);
        let mut probs = logits.clone();
        let (loss, correct) = softmax_cross_entropy(&mut probs, n, &labels);
        assert!((loss - ref_loss).abs() <= 1e-5 * ref_loss.abs().max(1.0), "n={n}: loss {loss} vs {ref_loss}");
        assert_eq!(correct, ref_correct, "n={n}: rows whose arg-max is the label");
        for (p, e) in probs.iter().zip(&expected) {
            assert!((p - e).abs() <= 1e-6, "n={n}: prob {p} vs {e}");
        }
        // Gradient of the summed loss by central differences on a few logits.
        let mut grad = probs.clone();
        softmax_cross_entropy_grad(&mut grad, n, &labels, 1.0);
        for idx in [0, rows * n / 2, rows * n - 1] {
            let h = 1e-2f32;
            let mut plus = logits.clone();
            plus[idx] += h;
            let mut minus = logits.clone();
            minus[idx] -= h;
            let mut scratch = vec![0.0; rows * n];
            let fd = (reference::softmax_cross_entropy(&plus, n, &labels, &mut scratch).0
                - reference::softmax_cross_entropy(&minus, n, &labels, &mut scratch).0)
                / (2.0 * h as f64);
            assert!((grad[idx] as f64 - fd).abs() <= 1e-3, "n={n} grad[{idx}] = {} vs {fd}", grad[idx]);
        }
    }
}

/// The loss of rows whose logits share a large offset, or span +-`f32::MAX`, against the
/// twin: the offset must not round the `log` away, and `max - x[label]` must not overflow.
#[test]
fn softmax_loss_keeps_its_log_under_large_offsets() {
    for (offset, scale) in [(1e4f64, 1.0f64), (-1e4, 1.0), (1e7, 1.0), (1e30, 1.0), (-1e30, 1.0), (0.0, 1e38)] {
        for n in [2, 17] {
            let rows = 5;
            let logits: Vec<f32> = random(rows * n, 7 + n as u64)
                .iter()
                .map(|&z| (offset + scale * z as f64).clamp(-f32::MAX as f64, f32::MAX as f64) as f32)
                .collect();
            let labels: Vec<u8> = (0..rows).map(|r| (r % n) as u8).collect();
            let mut expected = vec![0.0; rows * n];
            let (ref_loss, ref_correct) = reference::softmax_cross_entropy(&logits, n, &labels, &mut expected);
            let mut probs = logits.clone();
            let (loss, correct) = softmax_cross_entropy(&mut probs, n, &labels);
            assert!(
                ref_loss.is_finite() && (loss - ref_loss).abs() <= 1e-5 * ref_loss.abs() + 1e-5,
                "offset {offset:e}, scale {scale:e}, n={n}: loss {loss} vs {ref_loss}"
            );
            assert_eq!(correct, ref_correct, "offset {offset:e}, scale {scale:e}, n={n}");
        }
    }
}

#[test]
fn softmax_is_stable_for_huge_logits() {
    let mut logits = vec![1e30, -1e30, 0.0, 88.0];
    let (loss, correct) = softmax_cross_entropy(&mut logits, 4, &[0]);
    assert_eq!(correct, 1);
    assert!(loss.is_finite() && loss.abs() < 1e-6, "{loss}");
    assert!(logits.iter().all(|p| p.is_finite()));
}

/// Byte conversion (every batch goes through it) equals the scalar formula bit for bit, over
/// lengths around the vector width.
#[test]
fn byte_conversions_match_the_scalar_formulas() {
    use simdnn::kernels::vector::{bytes_to_f32_scaled, bytes_to_f32_standardised};
    for len in [0, 1, 15, 16, 17, 33, 3072] {
        let src: Vec<u8> = (0..len).map(|i| (i * 97 % 256) as u8).collect();
        let mean = random(len, 11);
        let inv_std: Vec<f32> = random(len, 12).iter().map(|v| v.abs() + 0.01).collect();
        let mut got = vec![f32::NAN; len];
        bytes_to_f32_standardised(&src, &mut got, &mean, &inv_std);
        for i in 0..len {
            assert_eq!(got[i].to_bits(), ((src[i] as f32 - mean[i]) * inv_std[i]).to_bits(), "len {len}, element {i}");
        }
        bytes_to_f32_scaled(&src, &mut got, 1.0 / 255.0);
        for i in 0..len {
            assert_eq!(got[i].to_bits(), (src[i] as f32 * (1.0 / 255.0)).to_bits(), "len {len}, element {i}");
        }
    }
}

#[test]
fn activation_names_parse_as_keras_spells_them_in_any_case() {
    let cases = [
        ("elu", Some(Activation::ELU)),
        ("ELU:0.5", Some(Activation::Elu { alpha: 0.5 })),
        ("Leaky_ReLU", Some(Activation::LEAKY_RELU)),
        ("leakyrelu:0.1", Some(Activation::LeakyRelu { alpha: 0.1 })),
        ("linear", Some(Activation::Identity)),
        ("SIGMOID", Some(Activation::Logistic)),
        ("selu", Some(Activation::Selu)),
        ("tanh", Some(Activation::Tanh)),
        ("softmax", Some(Activation::Softmax)),
        ("relu", Some(Activation::Relu)),
        ("relu:0.5", None),
        ("elu:0", None),
        ("elu:nan", None),
        ("gelu", None),
        ("", None),
    ];
    for (name, want) in cases {
        assert_eq!(Activation::parse(name), want, "{name:?}");
    }
}
