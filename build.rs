//! Records the git revision the binary is built from, for the build_info
//! metric; `unknown` outside a git checkout (a source tarball, a container
//! build without .git).

use std::process::Command;

fn main() {
    let revision = std::env::var("CRS_EXPORTER_REVISION")
        .ok()
        .or_else(|| {
            let out = Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        })
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=CRS_EXPORTER_REVISION={revision}");
    println!("cargo:rerun-if-env-changed=CRS_EXPORTER_REVISION");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
}
