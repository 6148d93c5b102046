//! The checked-in `include/cowcore.h` is what cbindgen makes of the crate now.
//!
//! Run with `COWCORE_BLESS=1` to rewrite the header after changing the API.

use std::path::Path;

#[test]
fn header_is_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header")
        .write(&mut generated);
    let generated = String::from_utf8(generated).expect("UTF-8");
    let path = dir.join("include/cowcore.h");
    if std::env::var_os("COWCORE_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write the header");
        return;
    }
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        current == generated,
        "include/cowcore.h is stale: run `COWCORE_BLESS=1 cargo test -p cowcore-capi --test header`"
    );
}

#[test]
fn header_version_is_the_crate_version() {
    let header = include_str!("../include/cowcore.h");
    let line = format!(
        "#define COWCORE_HEADER_VERSION \"{}\"",
        env!("CARGO_PKG_VERSION")
    );
    assert!(
        header.contains(&line),
        "cbindgen.toml's after_includes: {line}"
    );
}
