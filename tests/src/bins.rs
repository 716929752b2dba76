//! Finds the binaries under test. Tests never build them: `cargo build --bins`
//! (or `make test`) does, and a missing binary fails with that advice.

use std::path::PathBuf;

/// The directory holding `scs-node` and `scs`: `$SCS_BIN_DIR` when set, else
/// the `target/debug` this test executable was built into.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SCS_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("the path of the test executable");
    // Test executables live in target/<profile>/deps/.
    let deps = exe.parent().expect("test executable has a parent directory");
    match deps.file_name() {
        Some(n) if n == "deps" => deps.parent().expect("deps has a parent").to_path_buf(),
        _ => deps.to_path_buf(),
    }
}

/// The full path of binary `name`.
///
/// # Panics
/// When it has not been built, telling how to build it.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --bins` in the workspace first \
         (or point SCS_BIN_DIR at a directory holding scs-node and scs)",
        path.display()
    );
    path
}
