//! Cargo, run from inside a test or a bench as if from a shell.

use std::process::Command;

/// A `cargo` command without the variables cargo sets for the test or
/// bench that runs it (`CARGO_PKG_NAME`, `CARGO_MANIFEST_DIR`, `OUT_DIR`
/// and the like). Build scripts ask to be rerun when such a variable
/// changes (ring's does, for `CARGO_PKG_NAME` and others): with them, a
/// `cargo build` from a test would compile ring and all above it again,
/// and the user's next `cargo run` would compile them back.
pub fn command() -> Command {
    let mut cargo = Command::new(env!("CARGO"));
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_for_a_crate = ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_BIN_", "CARGO_CFG_"]
            .iter()
            .any(|prefix| name.starts_with(prefix))
            || [
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
                "OUT_DIR",
            ]
            .contains(&name.as_ref());
        if set_for_a_crate {
            cargo.env_remove(name.as_ref());
        }
    }
    cargo
}
