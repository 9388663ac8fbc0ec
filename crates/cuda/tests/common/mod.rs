//! Shared by the GPU parity tests: opening the device (skipping visibly
//! without one, failing when `REQUIRE_GPU=1`), random inputs, poisoned
//! outputs and the tolerance check `|x − ref| ≤ atol + rtol·|ref|`.
#![allow(dead_code)]

use kaiyuan_cuda::{GpuBuffer, GpuDevice, GpuFloat};

/// The device, or `None` after printing why the test is skipped.
pub fn gpu(test: &str) -> Option<GpuDevice> {
    match GpuDevice::new(0) {
        Ok(device) => Some(device),
        Err(error) => {
            if std::env::var("REQUIRE_GPU").as_deref() == Ok("1") {
                panic!("{test}: REQUIRE_GPU=1 but {error}");
            }
            eprintln!("SKIPPED {test}: {error}");
            None
        }
    }
}

/// As [`gpu`], for a test of the kernels in `files`. Under the CPU emulator
/// (feature `emulator`) each file is built first, and a file the emulator
/// cannot build (inline PTX outside the helper block it replaces, say)
/// skips the test visibly, whatever `REQUIRE_GPU` says; on a GPU this is
/// `gpu`.
pub fn gpu_for(
    test: &str,
    files: &[&'static kaiyuan_cuda::kernels::KernelFile],
) -> Option<GpuDevice> {
    let device = gpu(test)?;
    #[cfg(feature = "emulator")]
    for file in files {
        if let Err(error) = device.load(file) {
            eprintln!(
                "SKIPPED {test}: kernels/{}.cu does not run on the emulator: {error}",
                file.name
            );
            return None;
        }
    }
    #[cfg(not(feature = "emulator"))]
    let _ = files;
    Some(device)
}

/// A deterministic generator (SplitMix64), so failures reproduce.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [lo, hi), never exactly zero-filled.
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * unit
    }

    pub fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }

    pub fn below(&mut self, n: u32) -> u32 {
        (self.next_u64() % n as u64) as u32
    }
}

/// Rounds through `T` so the CPU reference sees exactly the GPU's inputs.
pub fn through<T: GpuFloat>(values: &[f32]) -> (Vec<T>, Vec<f32>) {
    let stored: Vec<T> = values.iter().map(|&v| T::from_f32(v)).collect();
    let widened = stored.iter().map(|&v| v.to_f32()).collect();
    (stored, widened)
}

/// A device buffer of `n` NaNs: an element the kernel forgets to write fails
/// the comparison.
pub fn poisoned<T: GpuFloat>(device: &GpuDevice, n: usize) -> GpuBuffer<T> {
    device
        .upload(&vec![T::from_f32(f32::NAN); n])
        .expect("upload poison")
}

/// (atol, rtol) per dtype: f32 1e-5, half types 1e-2 (callers may widen for
/// long reductions and say why).
pub fn tolerance<T: GpuFloat>() -> (f32, f32) {
    if T::SUFFIX == "f32" {
        (1e-5, 1e-5)
    } else {
        (1e-2, 1e-2)
    }
}

/// Asserts `|got − want| ≤ atol + rtol·|want|` elementwise, printing the first
/// mismatches; NaN in `got` always fails.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut bad = Vec::new();
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if !g.is_finite() && w.is_finite() || (g - w).abs() > atol + rtol * w.abs() {
            bad.push(i);
        }
    }
    if !bad.is_empty() {
        let shown: Vec<String> = bad
            .iter()
            .take(8)
            .map(|&i| format!("[{i}] got {} want {}", got[i], want[i]))
            .collect();
        panic!(
            "{what}: {} of {} elements outside atol {atol} rtol {rtol}: {}",
            bad.len(),
            got.len(),
            shown.join(", ")
        );
    }
}

/// Downloads and widens to f32.
pub fn fetch<T: GpuFloat>(device: &GpuDevice, buffer: &GpuBuffer<T>) -> Vec<f32> {
    device
        .download(buffer)
        .expect("download")
        .into_iter()
        .map(|v| v.to_f32())
        .collect()
}
