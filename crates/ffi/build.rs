//! Links the system libsodium (Debian: `libsodium-dev`). `pkg-config` supplies a
//! non-default library directory when there is one; nothing is downloaded or built.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    if let Ok(out) = Command::new("pkg-config")
        .args(["--libs-only-L", "libsodium"])
        .output()
    {
        if out.status.success() {
            for flag in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Some(dir) = flag.strip_prefix("-L") {
                    println!("cargo:rustc-link-search=native={dir}");
                }
            }
        }
    }
    println!("cargo:rustc-link-lib=dylib=sodium");
}
