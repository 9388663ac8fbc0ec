//! `cargo xtask ci`: the checks `.ci/run` runs once the tools are installed.

/// The checks, in order; the first failure stops the run.
const STEPS: &[&[&str]] = &[
    &["fmt", "--all", "--", "--check"],
    &[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ],
    &["test", "--workspace"],
];

/// Runs every step of [`STEPS`], stopping at the first that fails.
pub fn run() -> anyhow::Result<()> {
    for step in STEPS {
        let mut cmd = crate::cargo();
        cmd.args(*step);
        let status = crate::run_echoed(&mut cmd)?;
        if !status.success() {
            eprintln!("ci: `cargo {}` failed ({status})", step.join(" "));
            return crate::exit_like(status);
        }
    }
    eprintln!("ci: all checks passed");
    Ok(())
}
