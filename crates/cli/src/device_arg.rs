//! `--device cpu|cuda[:N]` of `generate`, `eval` and `train`.
//!
//! CUDA is probed before anything else runs, without panicking: a build
//! without the `cuda` feature, a machine without the driver, or a driver
//! without a device all end in one line, `no CUDA device: <why>`.

use anyhow::bail;

/// Where a command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceArg {
    /// The CPU (the default).
    #[default]
    Cpu,
    /// CUDA device `N` (`cuda` is `cuda:0`).
    Cuda(usize),
}

impl std::str::FromStr for DeviceArg {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "cpu" => Ok(DeviceArg::Cpu),
            "cuda" => Ok(DeviceArg::Cuda(0)),
            _ => text
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceArg::Cuda)
                .ok_or_else(|| format!("`{text}` is not a device: use cpu, cuda or cuda:N")),
        }
    }
}

/// Checks the device before `command` starts. The CPU always passes; a CUDA
/// device must exist, and then `command` must be able to run on it.
pub fn check(device: DeviceArg, command: &str) -> anyhow::Result<()> {
    let DeviceArg::Cuda(ordinal) = device else {
        return Ok(());
    };
    let gpu = kaiyuan_cuda::GpuDevice::new(ordinal)?;
    let info = gpu.info();
    bail!(
        "found {} ({}, {} GiB), but `{command}` cannot run on CUDA yet: the kernels exist \
         (crates/cuda) and are not yet wired into the tensor ops; run with --device cpu",
        info.name,
        info.arch(),
        info.total_memory >> 30
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices() {
        assert_eq!("cpu".parse::<DeviceArg>(), Ok(DeviceArg::Cpu));
        assert_eq!("cuda".parse::<DeviceArg>(), Ok(DeviceArg::Cuda(0)));
        assert_eq!("cuda:3".parse::<DeviceArg>(), Ok(DeviceArg::Cuda(3)));
        assert!("gpu".parse::<DeviceArg>().is_err());
        assert!("cuda:x".parse::<DeviceArg>().is_err());
    }

    #[test]
    fn cuda_without_a_device_is_an_error_not_a_panic() {
        match check(DeviceArg::Cuda(0), "generate") {
            Ok(()) => panic!("no command runs on CUDA yet"),
            Err(error) => {
                let text = error.to_string();
                // A machine with a GPU and the `cuda` feature reports the
                // device it found instead.
                assert!(
                    text.starts_with("no CUDA device") || text.starts_with("found "),
                    "{text}"
                );
            }
        }
        assert!(check(DeviceArg::Cpu, "generate").is_ok());
    }
}
