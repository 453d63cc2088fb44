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

#[test]
fn the_backends_migrations_stay_in_step() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates");
    let list = |backend: &str| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(root.join(backend).join("migrations"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let sqlite = list("store-sqlite");
    assert!(!sqlite.is_empty());
    assert_eq!(sqlite, list("store-postgres"));
    let versions = |m: &[(i64, &str, &str)]| {
        m.iter()
            .map(|(v, n, _)| (*v, n.to_string()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        versions(tillgate_store_sqlite::MIGRATIONS),
        versions(tillgate_store_postgres::MIGRATIONS)
    );
    // Every table and column of one backend exists in the other.
    let columns = |sql: &str| -> Vec<String> {
        sql.lines()
            .map(str::trim)
            .filter(|l| !l.starts_with("--") && !l.is_empty())
            .filter_map(|l| {
                let word = l.split_whitespace().next()?;
                let is_name = word.chars().all(|c| c.is_ascii_lowercase() || c == '_');
                (is_name && !["check", "unique", "where"].contains(&word)).then(|| word.to_owned())
            })
            .collect()
    };
    for ((_, _, a), (_, _, b)) in tillgate_store_sqlite::MIGRATIONS
        .iter()
        .zip(tillgate_store_postgres::MIGRATIONS)
    {
        assert_eq!(columns(a), columns(b));
    }
}
