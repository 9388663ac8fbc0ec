//! GPU-vs-CPU parity of `kernels/gemm.cu` and of the cuBLAS path: an f64
//! product of the inputs as stored is the reference. The device tests exist
//! in the `cuda` build (skipping visibly without a GPU, failing under
//! `REQUIRE_GPU=1`) and the `emulator` build (the kernels on the CPU; cuBLAS
//! is not there); the reference's own check runs in every build.

mod common;

use common::*;
use kaiyuan_cuda::ops::gemm::Gemm;

/// `alpha·op(A)·op(B) + beta·C0` in f64, row-major per batch item.
fn reference(spec: &Gemm, a: &[f32], b: &[f32], c0: &[f32]) -> Vec<f64> {
    let (m, n, k) = (spec.m, spec.n, spec.k);
    let mut out = vec![0.0f64; spec.batch * m * n];
    for z in 0..spec.batch {
        let (a, b) = (&a[z * m * k..], &b[z * k * n..]);
        for i in 0..m {
            for j in 0..n {
                let mut sum = 0.0f64;
                for p in 0..k {
                    let x = if spec.a_transposed {
                        a[p * m + i]
                    } else {
                        a[i * k + p]
                    };
                    let y = if spec.b_transposed {
                        b[j * k + p]
                    } else {
                        b[p * n + j]
                    };
                    sum += x as f64 * y as f64;
                }
                let at = z * m * n + i * n + j;
                let previous = if spec.beta != 0.0 {
                    spec.beta as f64 * c0[at] as f64
                } else {
                    0.0
                };
                out[at] = spec.alpha as f64 * sum + previous;
            }
        }
    }
    out
}

#[cfg(any(feature = "cuda", feature = "emulator"))]
mod on_device {
    use super::*;
    use kaiyuan_cuda::kernels::GEMM;
    use kaiyuan_cuda::ops::gemm::{self, GemmKernel};
    use kaiyuan_cuda::{CudaError, GpuBuffer, GpuDevice, GpuFloat};

    /// Shapes covering single rows, partial tiles in every dimension, k not a
    /// multiple of 8 (element-wise tile loads), a long reduction, every layout,
    /// batching and alpha/beta.
    fn cases() -> Vec<Gemm> {
        vec![
            Gemm::linear(1, 17, 33),
            Gemm::new(64, 64, 64),
            Gemm::new(130, 200, 72).transposed(true, false),
            Gemm::linear(257, 129, 1000),
            Gemm::new(96, 136, 40)
                .transposed(true, true)
                .batched(3)
                .scaled(0.5, 1.0),
            Gemm::new(200, 256, 128).batched(2),
            Gemm::linear(33, 70, 13).scaled(-1.25, 0.0),
            Gemm::new(5, 3, 1).scaled(1.0, 2.0),
        ]
    }

    /// (atol, rtol) for inputs `T`, output `O`, reduction length `k`.
    fn gemm_tolerance<T: GpuFloat, O: GpuFloat>(k: usize) -> (f32, f32) {
        let long = (k as f32 / 100.0).max(1.0);
        match (T::SUFFIX, O::SUFFIX) {
            // f32 accumulation error grows with the reduction: about √k·|partial
            // sums|·2⁻²⁴ ≈ 2e-5 for k = 1000 and inputs in [-1, 1].
            ("f32", "f32") => (1e-5 * long, 1e-5),
            // Exact products; the tensor cores' f32 accumulation is not strictly
            // IEEE (operands aligned before the adds).
            (_, "f32") => (1e-4 * long, 1e-4),
            // Rounding the result to bf16/f16 dominates.
            _ => tolerance::<O>(),
        }
    }

    /// Runs one product through `run` and compares with the reference. `O` is
    /// the output type; `C` is poisoned first unless beta reads it.
    fn check_product<T: GpuFloat, O: GpuFloat>(
        device: &GpuDevice,
        what: &str,
        spec: &Gemm,
        rng: &mut Rng,
        run: impl FnOnce(&GpuBuffer<T>, &GpuBuffer<T>, &mut GpuBuffer<O>),
    ) {
        let (a_stored, a) = through::<T>(&rng.vec(spec.a_len().unwrap(), -1.0, 1.0));
        let (b_stored, b) = through::<T>(&rng.vec(spec.b_len().unwrap(), -1.0, 1.0));
        let c_len = spec.c_len().unwrap();
        let (c_stored, c0) = through::<O>(&rng.vec(c_len, -1.0, 1.0));
        let a_buf = device.upload(&a_stored).expect("upload a");
        let b_buf = device.upload(&b_stored).expect("upload b");
        let mut c_buf = if spec.beta != 0.0 {
            device.upload(&c_stored).expect("upload c")
        } else {
            poisoned::<O>(device, c_len)
        };
        run(&a_buf, &b_buf, &mut c_buf);
        let got = fetch(device, &c_buf);
        let want: Vec<f32> = reference(spec, &a, &b, &c0)
            .into_iter()
            .map(|x| x as f32)
            .collect();
        let (atol, rtol) = gemm_tolerance::<T, O>(spec.k);
        assert_close(
            &format!(
                "{what} m={} n={} k={} batch={} a_t={} b_t={} alpha={} beta={}",
                spec.m,
                spec.n,
                spec.k,
                spec.batch,
                spec.a_transposed,
                spec.b_transposed,
                spec.alpha,
                spec.beta
            ),
            &got,
            &want,
            atol,
            rtol,
        );
    }

    /// `spec` on bf16 inputs and an `O` output is an error, not a launch.
    fn assert_refused<O: GpuFloat>(device: &GpuDevice, spec: &Gemm) {
        let a = device
            .zeros::<half::bf16>(spec.a_len().unwrap())
            .expect("a");
        let b = device
            .zeros::<half::bf16>(spec.b_len().unwrap())
            .expect("b");
        let mut c = device.zeros::<O>(spec.c_len().unwrap()).expect("c");
        assert!(
            gemm::gemm_into(device, spec, &a, &b, &mut c).is_err(),
            "{spec:?}"
        );
    }

    /// [`check_product`] of our kernel for `spec` (`gemm_into`).
    fn check_gemm<T: GpuFloat, O: GpuFloat>(
        device: &GpuDevice,
        what: &str,
        spec: &Gemm,
        rng: &mut Rng,
    ) {
        check_product::<T, O>(device, what, spec, rng, |a, b, c| {
            gemm::gemm_into(device, spec, a, b, c).expect("gemm_into");
        });
    }

    fn kernels_match<T: GpuFloat, O: GpuFloat>(kernel: GemmKernel) {
        let what = format!("gemm {kernel:?} {}→{}", T::SUFFIX, O::SUFFIX);
        let Some(device) = gpu_for(&what, &[&GEMM]) else {
            return;
        };
        let mut rng = Rng::new(7);
        for spec in cases() {
            let spec = spec.with_kernel(kernel);
            check_gemm::<T, O>(&device, &what, &spec, &mut rng);
        }
    }

    #[test]
    fn simt_f32() {
        kernels_match::<f32, f32>(GemmKernel::Auto);
    }

    #[test]
    fn tensor_core_bf16() {
        kernels_match::<half::bf16, half::bf16>(GemmKernel::Auto);
    }

    #[test]
    fn tensor_core_bf16_to_f32() {
        kernels_match::<half::bf16, f32>(GemmKernel::TensorCore);
    }

    #[test]
    fn tensor_core_f16() {
        kernels_match::<half::f16, half::f16>(GemmKernel::TensorCore);
    }

    #[test]
    fn tensor_core_f16_to_f32() {
        kernels_match::<half::f16, f32>(GemmKernel::Auto);
    }

    /// Every candidate tile (bf16 → bf16, nn and nt) on shapes with partial
    /// tiles of its own size, unaligned k, a K tail shorter than its step,
    /// batching and beta.
    #[test]
    fn tensor_core_tuning_tiles() {
        use kaiyuan_cuda::ops::gemm::{TC_TUNING_TILES, TcTile};
        let Some(device) = gpu_for("gemm tuning tiles", &[&GEMM]) else {
            return;
        };
        let mut rng = Rng::new(11);
        for tile in TC_TUNING_TILES {
            let what = format!("gemm tile {}", tile.name());
            let kernel = GemmKernel::TensorCoreTile(tile);
            for spec in [
                Gemm::linear(300, 260, 200),
                Gemm::new(257, 129, 96),
                Gemm::linear(70, 300, 77),
                Gemm::new(40, 136, 328).batched(2).scaled(0.5, 1.0),
                Gemm::linear(40, 136, 328).batched(2).scaled(0.5, 1.0),
            ] {
                let spec = spec.with_kernel(kernel);
                if !tile.candidate_layouts().contains(&spec.layout()) {
                    assert_refused::<half::bf16>(&device, &spec);
                    continue;
                }
                check_gemm::<half::bf16, half::bf16>(&device, &what, &spec, &mut rng);
            }
            // Not compiled for f32 outputs or a transposed A: an error, not a launch.
            let spec = Gemm::new(8, 8, 8).with_kernel(kernel);
            assert_refused::<f32>(&device, &spec);
            assert_refused::<half::bf16>(&device, &spec.transposed(true, false));
        }
        // The default tile named explicitly is the default kernel.
        let spec = Gemm::new(130, 200, 72).with_kernel(GemmKernel::TensorCoreTile(TcTile::DEFAULT));
        check_gemm::<half::f16, f32>(&device, "gemm default tile", &spec, &mut rng);
    }

    /// The Hopper kernels (wgmma, sm_90 only): every tile on partial tiles
    /// in m and n, a K tail shorter than the step, batching and beta; the
    /// shapes they are not compiled for are errors.
    #[test]
    fn wgmma_tiles() {
        use kaiyuan_cuda::kernels::GEMM_SM90;
        use kaiyuan_cuda::ops::gemm::WGMMA_TILES;
        let Some(device) = gpu_for("gemm wgmma", &[&GEMM_SM90]) else {
            return;
        };
        let arch = device.info().arch();
        if arch != "sm_90" {
            eprintln!("SKIPPED gemm wgmma: needs an sm_90 GPU, this one is {arch}");
            return;
        }
        let mut rng = Rng::new(13);
        for tile in WGMMA_TILES {
            let what = format!("gemm wgmma {}", tile.name());
            let kernel = GemmKernel::Wgmma(tile);
            for spec in [
                Gemm::linear(300, 260, 200),
                Gemm::linear(257, 129, 96),
                Gemm::linear(1, 17, 8),
                Gemm::linear(128, 256, 1024),
                Gemm::linear(40, 136, 328).batched(2).scaled(0.5, 1.0),
            ] {
                let spec = spec.with_kernel(kernel);
                check_gemm::<half::bf16, half::bf16>(&device, &what, &spec, &mut rng);
            }
            for spec in [Gemm::new(16, 16, 16), Gemm::linear(16, 16, 12)] {
                let spec = spec.with_kernel(kernel);
                assert_refused::<half::bf16>(&device, &spec);
            }
        }
    }

    #[test]
    fn simt_bf16() {
        kernels_match::<half::bf16, half::bf16>(GemmKernel::Simt);
    }

    #[test]
    fn simt_f16_to_f32() {
        kernels_match::<half::f16, f32>(GemmKernel::Simt);
    }

    #[cfg(feature = "cuda")]
    fn cublas_matches<T: GpuFloat>() {
        let what = format!("gemm_cublas {}", T::SUFFIX);
        let Some(device) = gpu_for(&what, &[&GEMM]) else {
            return;
        };
        let blas = gemm::Cublas::new(&device).expect("cuBLAS handle");
        let mut rng = Rng::new(9);
        for spec in cases() {
            check_product::<T, T>(&device, &what, &spec, &mut rng, |a, b, c| {
                gemm::gemm_cublas_into(&blas, &spec, a, b, c).expect("gemm_cublas_into");
            });
        }
    }

    #[cfg(feature = "cuda")]
    #[test]
    fn cublas_f32() {
        cublas_matches::<f32>();
    }

    #[cfg(feature = "cuda")]
    #[test]
    fn cublas_bf16() {
        cublas_matches::<half::bf16>();
    }

    #[cfg(feature = "cuda")]
    #[test]
    fn cublas_f16() {
        cublas_matches::<half::f16>();
    }

    #[test]
    fn linear_and_matmul_helpers() {
        let Some(device) = gpu_for("gemm helpers", &[&GEMM]) else {
            return;
        };
        let mut rng = Rng::new(3);
        let (m, n, k) = (19, 40, 24);
        let (x_stored, x) = through::<half::bf16>(&rng.vec(m * k, -1.0, 1.0));
        let (w_stored, w) = through::<half::bf16>(&rng.vec(n * k, -1.0, 1.0));
        let xb = device.upload(&x_stored).expect("upload");
        let wb = device.upload(&w_stored).expect("upload");
        let got = fetch(
            &device,
            &gemm::linear(&device, &xb, &wb, m, n, k).expect("linear"),
        );
        let want: Vec<f32> = reference(&Gemm::linear(m, n, k), &x, &w, &[])
            .into_iter()
            .map(|v| v as f32)
            .collect();
        let (atol, rtol) = tolerance::<half::bf16>();
        assert_close("linear bf16", &got, &want, atol, rtol);
        // w read as (k, n) = (24, 40): a plain product of the same buffers.
        let got = fetch(
            &device,
            &gemm::matmul(&device, &xb, &wb, m, n, k).expect("matmul"),
        );
        let want: Vec<f32> = reference(&Gemm::new(m, n, k), &x, &w, &[])
            .into_iter()
            .map(|v| v as f32)
            .collect();
        assert_close("matmul bf16", &got, &want, atol, rtol);
    }

    #[test]
    fn mismatched_operands_are_shape_errors() {
        let Some(device) = gpu_for("gemm shape errors", &[&GEMM]) else {
            return;
        };
        let a = device.upload(&[half::bf16::ONE; 12]).expect("upload");
        let b = device.upload(&[half::bf16::ONE; 12]).expect("upload");
        let mut c = device.zeros::<half::bf16>(9).expect("zeros");
        // (3, 4)·(4, 3) fits; (3, 4)·(4, 4) does not.
        gemm::gemm_into(&device, &Gemm::new(3, 3, 4), &a, &b, &mut c).expect("fits");
        let error = gemm::gemm_into(&device, &Gemm::new(3, 4, 4), &a, &b, &mut c).unwrap_err();
        assert!(matches!(error, CudaError::Shape { .. }), "{error}");
        // f32 inputs have no tensor-core kernel; bf16 inputs no f16 output.
        let af = device.upload(&[1.0f32; 12]).expect("upload");
        let mut cf = device.zeros::<f32>(9).expect("zeros");
        let spec = Gemm::new(3, 3, 4).with_kernel(GemmKernel::TensorCore);
        let error = gemm::gemm_into(&device, &spec, &af, &af, &mut cf).unwrap_err();
        assert!(matches!(error, CudaError::Shape { .. }), "{error}");
        let mut ch = device.zeros::<half::f16>(9).expect("zeros");
        let error = gemm::gemm_into(&device, &Gemm::new(3, 3, 4), &a, &b, &mut ch).unwrap_err();
        assert!(matches!(error, CudaError::Shape { .. }), "{error}");
    }
}

#[test]
fn reference_agrees_with_the_tensor_crate() {
    // The f64 reference itself, against kaiyuan-tensor's CPU gemm (no GPU).
    let mut rng = Rng::new(5);
    let (m, n, k) = (7, 9, 11);
    let a = rng.vec(m * k, -1.0, 1.0);
    let b = rng.vec(k * n, -1.0, 1.0);
    let ta = kaiyuan_tensor::Tensor::from_vec(a.clone(), &[m, k]).unwrap();
    let tb = kaiyuan_tensor::Tensor::from_vec(b.clone(), &[k, n]).unwrap();
    let want = ta.matmul(&tb).unwrap().to_vec::<f32>().unwrap();
    let got: Vec<f32> = reference(&Gemm::new(m, n, k), &a, &b, &[])
        .into_iter()
        .map(|v| v as f32)
        .collect();
    assert_close("reference vs tensor matmul", &got, &want, 1e-5, 1e-5);
    // And the transposed layouts are the same product of transposed storage.
    let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
    let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
    let got: Vec<f32> = reference(&Gemm::new(m, n, k).transposed(true, true), &at, &bt, &[])
        .into_iter()
        .map(|v| v as f32)
        .collect();
    assert_close("reference tt vs tensor matmul", &got, &want, 1e-5, 1e-5);
}
