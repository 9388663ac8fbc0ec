//! Capability commands: `cargo xtask <cmd> ARGS…` runs
//! `cargo run --release -p kaiyuan-cli -- <cmd> ARGS…`.

use std::process::ExitStatus;

/// Arguments passed through untouched to the `kaiyuan` binary.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Arguments for `kaiyuan <cmd>` (see `cargo xtask <cmd> --help`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// Runs `kaiyuan <name> <args…>` through `cargo run --release` and returns
/// its exit status.
pub fn run(name: &str, args: &[String]) -> anyhow::Result<ExitStatus> {
    let mut cmd = crate::cargo();
    cmd.args(["run", "--release", "-p", "kaiyuan-cli", "--", name])
        .args(args);
    crate::run_echoed(&mut cmd)
}
