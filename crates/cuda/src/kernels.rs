//! The kernel sources embedded in the binary: one `.cu` file per op family.

/// One kernel source file, compiled as one NVRTC program (one module).
#[derive(Debug)]
pub struct KernelFile {
    /// The file's name under `kernels/`, without `.cu`.
    pub name: &'static str,
    /// The file's text, without the common header.
    pub source: &'static str,
}

/// The header prepended to every kernel file (conversions, warp and block
/// reductions, the dtype instantiation macro).
pub const COMMON_HEADER: &str = include_str!("../kernels/common.cuh");

macro_rules! kernel_files {
    ($($ident:ident => $name:literal),* $(,)?) => {
        $(
            #[doc = concat!("`kernels/", $name, ".cu`.")]
            pub const $ident: KernelFile = KernelFile {
                name: $name,
                source: include_str!(concat!("../kernels/", $name, ".cu")),
            };
        )*
        /// Every kernel file, in the order the compile check reports them.
        pub const ALL: &[KernelFile] = &[$($ident),*];
    };
}

kernel_files! {
    ELEMENTWISE => "elementwise",
    REDUCE => "reduce",
    NORM => "norm",
    ROPE => "rope",
    EMBEDDING => "embedding",
    LOSS => "loss",
    ADAMW => "adamw",
    ATTENTION => "attention",
    GEMM => "gemm",
    QUANT => "quant",
}

impl KernelFile {
    /// The full program text NVRTC compiles: the common header, then the
    /// file, with a `#line` marker so compiler messages name the file.
    pub fn program(&self) -> String {
        format!(
            "{COMMON_HEADER}\n#line 1 \"{}.cu\"\n{}",
            self.name, self.source
        )
    }

    /// Finds a kernel file by name.
    pub fn by_name(name: &str) -> Option<&'static KernelFile> {
        ALL.iter().find(|file| file.name == name)
    }
}
