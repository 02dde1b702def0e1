//! The root package's build script does nothing: it exists so that cargo
//! reads the `[build-dependencies]` in `Cargo.toml`, which ask for the same
//! features of the crates that build scripts and derive macros use in every
//! build (see the comment above `[dependencies]` there).

fn main() {}
