//! The kernel sources embedded in the binary: one `.cu` file per op family.

/// One kernel source file, compiled as one NVRTC program (one module).
#[derive(Debug)]
pub struct KernelFile {
    /// The file's name under `kernels/`, without `.cu`.
    pub name: &'static str,
    /// The file's text, without the common header.
    pub source: &'static str,
    /// Whether the file uses the tensor-core helpers of
    /// `kernels/tensor_core.cuh` (prepended after the common header).
    pub tensor_cores: bool,
    /// Whether the file uses Hopper's architecture-specific instructions
    /// (wgmma): it is compiled only for `sm_90a`, loads only on sm_90
    /// devices, and the emulator does not run it.
    pub sm90a: bool,
}

/// The header prepended to every kernel file (conversions, warp and block
/// reductions, the dtype instantiation macro).
pub const COMMON_HEADER: &str = include_str!("../kernels/common.cuh");

/// The inline-PTX helpers (cp.async, ldmatrix, mma.sync) shared by the
/// tensor-core kernel files, between two marker lines the emulator replaces.
pub const TENSOR_CORE_HEADER: &str = include_str!("../kernels/tensor_core.cuh");

macro_rules! kernel_files {
    ($($ident:ident => $name:literal $(+ $flag:ident)*),* $(,)?) => {
        $(
            #[doc = concat!("`kernels/", $name, ".cu`.")]
            pub const $ident: KernelFile = KernelFile {
                name: $name,
                source: include_str!(concat!("../kernels/", $name, ".cu")),
                tensor_cores: kernel_files!(@has tensor_cores; $($flag)*),
                sm90a: kernel_files!(@has sm90a; $($flag)*),
            };
        )*
        /// Every kernel file, in the order the compile check reports them.
        pub const ALL: &[KernelFile] = &[$($ident),*];
    };
    (@has tensor_cores; tensor_cores $($rest:ident)*) => { true };
    (@has sm90a; sm90a $($rest:ident)*) => { true };
    (@has $want:ident; $other:ident $($rest:ident)*) => { kernel_files!(@has $want; $($rest)*) };
    (@has $want:ident;) => { false };
}

kernel_files! {
    ELEMENTWISE => "elementwise",
    REDUCE => "reduce",
    NORM => "norm",
    ROPE => "rope",
    EMBEDDING => "embedding",
    LOSS => "loss",
    ADAMW => "adamw",
    ATTENTION => "attention" + tensor_cores,
    GEMM => "gemm" + tensor_cores,
    GEMM_SM90 => "gemm_sm90" + tensor_cores + sm90a,
    QUANT => "quant",
}

impl KernelFile {
    /// The full program text NVRTC compiles: the common header, the
    /// tensor-core header when the file uses it, then the file, with `#line`
    /// markers so compiler messages name the right file.
    pub fn program(&self) -> String {
        let tensor_cores = if self.tensor_cores {
            format!("#line 1 \"tensor_core.cuh\"\n{TENSOR_CORE_HEADER}\n")
        } else {
            String::new()
        };
        format!(
            "{COMMON_HEADER}\n{tensor_cores}#line 1 \"{}.cu\"\n{}",
            self.name, self.source
        )
    }

    /// The NVRTC architecture to compile this file for on a device of
    /// `device_arch` (such as `sm_90`), or why it cannot run there.
    ///
    /// # Errors
    /// A message when the file is sm_90a-only and the device is not sm_90.
    pub fn arch_for(&self, device_arch: &str) -> std::result::Result<String, String> {
        match (self.sm90a, device_arch) {
            (false, _) => Ok(device_arch.to_string()),
            (true, "sm_90") => Ok("sm_90a".to_string()),
            (true, other) => Err(format!(
                "kernels/{}.cu uses Hopper's wgmma and runs only on sm_90 GPUs, not {other}",
                self.name
            )),
        }
    }

    /// Finds a kernel file by name.
    pub fn by_name(name: &str) -> Option<&'static KernelFile> {
        ALL.iter().find(|file| file.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hopper_files_compile_for_sm90a_only() {
        assert_eq!(GEMM.arch_for("sm_80").as_deref(), Ok("sm_80"));
        assert_eq!(GEMM_SM90.arch_for("sm_90").as_deref(), Ok("sm_90a"));
        let refused = GEMM_SM90.arch_for("sm_80").unwrap_err();
        assert!(refused.contains("sm_80"), "{refused}");
        assert!(ALL.iter().filter(|file| file.sm90a).count() == 1);
        const { assert!(GEMM_SM90.tensor_cores && !GEMM.sm90a) };
    }
}
