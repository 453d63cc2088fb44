//! Tidy checks of the tree itself: every Rust module says what it is for in a `//!` line, and
//! no production path carries a `todo!` or `unimplemented!`.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if !path.ends_with("target") {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn sources() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "crates", "tests"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(
        files.len() > 20,
        "the tidy check found too few files: {files:?}"
    );
    files
}

#[test]
fn every_module_starts_with_a_doc_line() {
    let missing: Vec<_> = sources()
        .into_iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            !text.trim_start().starts_with("//!")
        })
        .collect();
    assert!(
        missing.is_empty(),
        "modules without a //! line: {missing:?}"
    );
}

#[test]
fn no_stub_stands_on_a_production_path() {
    let needles = [concat!("todo", "!("), concat!("unimplemented", "!(")];
    let offenders: Vec<_> = sources()
        .into_iter()
        .filter(|f| !f.starts_with(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")))
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            needles.iter().any(|n| text.contains(n))
        })
        .collect();
    assert!(offenders.is_empty(), "stubs in {offenders:?}");
}
