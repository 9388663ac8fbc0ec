//! `--device cpu|cuda[:N]` of `generate`, `eval`, `train` and `bench train`
//! (parsed as the tensor crate's [`Device`]).
//!
//! CUDA is probed before anything else runs, without panicking: a build
//! without the `cuda` feature, a machine without the driver, or a driver
//! without a device all end in one line, `no CUDA device: <why>`.

use std::sync::OnceLock;

use anyhow::bail;
use kaiyuan_tensor::Device;

/// The device of this process's `generate`, `eval` or `train`, set once by
/// [`check`].
static DEVICE: OnceLock<Device> = OnceLock::new();

/// Checks the device before `command` starts and makes it the process's
/// device: the CPU always passes; a CUDA device must open.
pub fn check(device: Device, command: &str) -> anyhow::Result<()> {
    if let Device::Cuda(ordinal) = device {
        let gpu = kaiyuan_cuda::GpuDevice::new(ordinal)?;
        let info = gpu.info();
        eprintln!(
            "{command} on {} ({}, {} GiB)",
            info.name,
            info.arch(),
            info.total_memory >> 30
        );
        kaiyuan_tensor::check_device(device)?;
    }
    if DEVICE.set(device).is_err() && DEVICE.get() != Some(&device) {
        bail!("the device was already chosen as {:?}", DEVICE.get());
    }
    Ok(())
}

/// The process's device (the CPU unless `--device` chose another).
pub fn current() -> Device {
    DEVICE.get().copied().unwrap_or(Device::Cpu)
}

/// Moves `model` to the process's device.
pub fn place(model: &mut kaiyuan_models::Model) -> anyhow::Result<()> {
    let device = current();
    if device.is_cuda() {
        model.to_device(device)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices() {
        assert_eq!("cpu".parse::<Device>(), Ok(Device::Cpu));
        assert_eq!("cuda".parse::<Device>(), Ok(Device::Cuda(0)));
        assert_eq!("cuda:3".parse::<Device>(), Ok(Device::Cuda(3)));
        assert!("gpu".parse::<Device>().is_err());
        assert!("cuda:x".parse::<Device>().is_err());
    }

    #[test]
    fn cuda_without_a_device_is_an_error_not_a_panic() {
        // A build with the `cuda` feature on a machine with a GPU finds it.
        if let Err(error) = check(Device::Cuda(0), "generate") {
            assert!(error.to_string().starts_with("no CUDA device"), "{error}");
        }
        assert!(check(Device::Cpu, "generate").is_ok() || current().is_cuda());
    }
}
