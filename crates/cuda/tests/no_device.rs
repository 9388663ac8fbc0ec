//! "No CUDA device" is a value, never a panic, on every kind of machine:
//! no driver library (this machine, in CI), a driver whose `cuInit` reports
//! `CUDA_ERROR_NO_DEVICE`, and a driver that counts zero devices. The two
//! driver cases use stub `libcuda.so` libraries built here with `cc` and
//! loaded by a child process (the loader reads `LD_LIBRARY_PATH` at start).
#![cfg(feature = "cuda")]

use std::path::{Path, PathBuf};
use std::process::Command;

use kaiyuan_cuda::GpuDevice;

const CHILD: &str = "KAIYUAN_CUDA_STUB_CHILD";

/// A stub driver: `cuInit` returns `init`, `cuDeviceGetCount` reports `count`.
fn stub_driver(name: &str, init: i32, count: i32) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/cuda-stub")
        .join(name);
    std::fs::create_dir_all(&dir).ok()?;
    let source = dir.join("stub.c");
    std::fs::write(
        &source,
        format!(
            "int cuInit(unsigned int flags) {{ (void)flags; return {init}; }}\n\
             int cuDeviceGetCount(int* count) {{ *count = {count}; return 0; }}\n\
             int cuDriverGetVersion(int* version) {{ *version = 13000; return 0; }}\n\
             int cuGetErrorString(int error, const char** text) {{\n\
               *text = error == 100 ? \"no CUDA-capable device is detected\" : \"stub error\"; return 0; }}\n\
             int cuGetErrorName(int error, const char** text) {{\n\
               *text = error == 100 ? \"CUDA_ERROR_NO_DEVICE\" : \"CUDA_ERROR_UNKNOWN\"; return 0; }}\n"
        ),
    )
    .ok()?;
    let library = dir.join("libcuda.so");
    let built = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&library)
        .arg(&source)
        .status()
        .ok()?;
    built.success().then_some(dir)
}

fn run_child(test: &str, library_dir: &Path) -> String {
    let output = Command::new(std::env::current_exe().expect("test binary"))
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .env("LD_LIBRARY_PATH", library_dir)
        .output()
        .expect("run the child test");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "child {test} failed:\n{text}");
    text
}

/// In the child: open device 0 and print the error.
#[test]
fn child_opens_device() {
    if std::env::var(CHILD).is_err() {
        return;
    }
    match GpuDevice::new(0) {
        Ok(device) => panic!(
            "the stub driver has no device, yet {:?} opened",
            device.info()
        ),
        Err(error) => println!("CHILD-ERROR: {error}"),
    }
}

#[test]
fn no_driver_library_is_no_cuda_device() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    // SAFETY: only tries to dlopen the driver library.
    if unsafe { cudarc::driver::sys::is_culib_present() } {
        eprintln!("SKIPPED: this machine has a CUDA driver library");
        return;
    }
    let error = GpuDevice::new(0).expect_err("no driver, no device");
    assert_eq!(
        error.to_string(),
        "no CUDA device: the CUDA driver library (libcuda.so) is not installed"
    );
}

#[test]
fn a_driver_without_devices_is_no_cuda_device() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    // CUDA_ERROR_NO_DEVICE = 100.
    let Some(no_device) = stub_driver("init-fails", 100, 0) else {
        eprintln!("SKIPPED: no C compiler to build the stub driver");
        return;
    };
    let text = run_child("child_opens_device", &no_device);
    assert!(
        text.contains("CHILD-ERROR: no CUDA device: the driver reports"),
        "{text}"
    );
    assert!(text.contains("CUDA_ERROR_NO_DEVICE"), "{text}");
    assert!(!text.contains("panicked"), "{text}");

    let zero = stub_driver("zero-devices", 0, 0).expect("stub built once already");
    let text = run_child("child_opens_device", &zero);
    assert!(
        text.contains("CHILD-ERROR: no CUDA device: the driver sees no device"),
        "{text}"
    );
}
