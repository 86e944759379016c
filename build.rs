//! Build-time outputs:
//! - the commit the binary is built from, for DISCOVER's `release` string;
//! - the man pages (`clap_mangen`) and shell completions (`clap_complete`), generated from
//!   the very definitions the binary parses its command line with (`src/cli/args.rs`,
//!   included here as it is), so the package's man page never drifts from `--help`.
//!
//! The pages and completions go to `<target>/<profile>/libra-worker-assets/`, a fixed
//! place beside the binary: the Debian package's assets name files there, and cargo-deb
//! maps `target/release/` to whichever profile directory it built (`OUT_DIR` has a hash in
//! its name that a package manifest cannot spell).
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::CommandFactory;
use clap_complete::Shell;

#[allow(dead_code)]
#[path = "src/cli/args.rs"]
mod args;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown commit".to_string());
    println!("cargo:rustc-env=LIBRA_WORKER_BUILD=git {commit}");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    println!("cargo:rerun-if-changed=src/cli/args.rs");
    println!("cargo:rerun-if-changed=build.rs");

    if let Err(e) = write_docs() {
        // A failure here must fail the build: a package without its man page is a bug.
        panic!("cannot generate the man pages and completions: {e}");
    }
}

/// `<target>/<profile>`: `OUT_DIR` is `<target>/<profile>/build/<package>-<hash>/out`.
fn profile_dir() -> std::io::Result<PathBuf> {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    out.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .ok_or_else(|| std::io::Error::other(format!("unexpected OUT_DIR {}", out.display())))
}

fn write_docs() -> std::io::Result<()> {
    let assets = profile_dir()?.join("libra-worker-assets");
    let man = assets.join("man");
    let completions = assets.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    let cmd = args::Cli::command();
    // One page for the command and one per subcommand (libra-worker-run.1.gz, ...),
    // gzipped here: cargo-deb compresses man pages it copies, not ones it counts as built.
    let plain = assets.join("man-plain");
    std::fs::create_dir_all(&plain)?;
    clap_mangen::generate_to(cmd.clone(), &plain)?;
    for entry in std::fs::read_dir(&plain)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let text = std::fs::read(&path)?;
        // No name and no time in the gzip header: the same page gives the same bytes.
        let file = std::fs::File::create(man.join(format!("{name}.gz")))?;
        let mut gz = flate2::GzBuilder::new().write(file, flate2::Compression::best());
        std::io::Write::write_all(&mut gz, &text)?;
        gz.finish()?;
    }
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd.clone(), "libra-worker", &completions)?;
    }
    Ok(())
}
