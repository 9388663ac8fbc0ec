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
}

/// The header prepended to every kernel file (conversions, warp and block
/// reductions, the dtype instantiation macro).
pub const COMMON_HEADER: &str = include_str!("../kernels/common.cuh");

/// The inline-PTX helpers (cp.async, ldmatrix, mma.sync) shared by the
/// tensor-core kernel files, between two marker lines the emulator replaces.
pub const TENSOR_CORE_HEADER: &str = include_str!("../kernels/tensor_core.cuh");

macro_rules! kernel_files {
    ($($ident:ident => $name:literal $(+ $tensor_cores:ident)?),* $(,)?) => {
        $(
            #[doc = concat!("`kernels/", $name, ".cu`.")]
            pub const $ident: KernelFile = KernelFile {
                name: $name,
                source: include_str!(concat!("../kernels/", $name, ".cu")),
                tensor_cores: kernel_files!(@flag $($tensor_cores)?),
            };
        )*
        /// Every kernel file, in the order the compile check reports them.
        pub const ALL: &[KernelFile] = &[$($ident),*];
    };
    (@flag tensor_cores) => { true };
    (@flag) => { false };
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

    /// Finds a kernel file by name.
    pub fn by_name(name: &str) -> Option<&'static KernelFile> {
        ALL.iter().find(|file| file.name == name)
    }
}
