//! Fuzzing on stable Rust, inside `cargo test` (issue 15, part 4): a proptest runner that
//! counts its executions, byte-level mutations of real requests (flips, insertions of
//! troublesome tokens, deletions, truncations, duplications), and a call of an axum router
//! that answers with the status and the JSON envelope.
//!
//! `TILLGATE_FUZZ_CASES=N` sets the cases per target (default [`DEFAULT_CASES`], what CI
//! runs); a long run sets it to 100 000 or more.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use std::sync::atomic::{AtomicU64, Ordering};

/// Cases per fuzz target when `TILLGATE_FUZZ_CASES` is unset: proptest's default.
pub const DEFAULT_CASES: u32 = 256;

/// The cases per target.
pub fn cases() -> u32 {
    std::env::var("TILLGATE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

/// Runs `test` on `cases()` values of `strategy`, prints how many executions ran, and panics
/// with the smallest failing input proptest found.
pub fn run<S: Strategy>(
    name: &str,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) -> u64 {
    let config = Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let executions = AtomicU64::new(0);
    let result = runner.run(&strategy, |value| {
        executions.fetch_add(1, Ordering::Relaxed);
        test(value)
    });
    let n = executions.load(Ordering::Relaxed);
    eprintln!("fuzz {name}: {n} executions");
    if let Err(e) = result {
        panic!("fuzz target {name} failed: {e}");
    }
    n
}

/// Text that parsers find hard: nulls and controls, escapes, quotes, separators, non-UTF-8,
/// numbers at and past every limit, and structure characters.
pub const TOKENS: &[&[u8]] = &[
    b"\0",
    b"\\u0000",
    b"%00",
    b"\x01",
    b"\x7f",
    b"\xff",
    b"\xc3\x28",
    b"%ff",
    b"\xe2\x80\xae",
    b"\"",
    b"\\",
    b",",
    b"&",
    b"=",
    b"+",
    b"%",
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b"null",
    b"true",
    b"[]",
    b"{}",
    b"-1",
    b"0",
    b"0.001",
    b"1e9",
    b"-0",
    b"NaN",
    b"99999999999999999999999",
    b"9223372036854775807",
    b"9223372036854775808",
    b"1.",
    b".5",
    b"1,00",
    b" ",
    b"\t",
    b"\r\n",
    b"\xe6\xb5\x8b\xe8\xaf\x95",
];

/// One change to a body.
#[derive(Debug, Clone)]
pub enum Mutation {
    Flip { at: usize, bits: u8 },
    Insert { at: usize, bytes: Vec<u8> },
    Token { at: usize, token: usize },
    Delete { at: usize, len: usize },
    Truncate { at: usize },
    Duplicate { at: usize, len: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let at = any::<usize>();
    prop_oneof![
        (at, 1u8..=255).prop_map(|(at, bits)| Mutation::Flip { at, bits }),
        (at, proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (at, 0..TOKENS.len()).prop_map(|(at, token)| Mutation::Token { at, token }),
        (at, 1usize..16).prop_map(|(at, len)| Mutation::Delete { at, len }),
        at.prop_map(|at| Mutation::Truncate { at }),
        (at, 1usize..32).prop_map(|(at, len)| Mutation::Duplicate { at, len }),
    ]
}

/// One to four mutations.
pub fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    proptest::collection::vec(mutation(), 1..5)
}

/// `body` with `mutations` applied in turn (positions wrap around the body's length).
pub fn apply(body: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut out = body.to_vec();
    for m in mutations {
        let pos = |at: usize, len: usize| if len == 0 { 0 } else { at % (len + 1) };
        match m {
            Mutation::Flip { at, bits } => {
                if !out.is_empty() {
                    let i = at % out.len();
                    out[i] ^= bits;
                }
            }
            Mutation::Insert { at, bytes } => {
                let i = pos(*at, out.len());
                out.splice(i..i, bytes.iter().copied());
            }
            Mutation::Token { at, token } => {
                let i = pos(*at, out.len());
                out.splice(i..i, TOKENS[*token].iter().copied());
            }
            Mutation::Delete { at, len } => {
                let i = pos(*at, out.len());
                let end = (i + len).min(out.len());
                out.drain(i..end);
            }
            Mutation::Truncate { at } => {
                let i = pos(*at, out.len());
                out.truncate(i);
            }
            Mutation::Duplicate { at, len } => {
                let i = pos(*at, out.len());
                let end = (i + len).min(out.len());
                let copy = out[i..end].to_vec();
                out.splice(end..end, copy);
            }
        }
    }
    out
}

/// A value a field may be given instead of its own: a troublesome token, any string, or a
/// number-like string past the limits.
pub fn weird_value() -> impl Strategy<Value = String> {
    prop_oneof![
        (0..TOKENS.len()).prop_map(|i| String::from_utf8_lossy(TOKENS[i]).into_owned()),
        ".{0,40}",
        "-?[0-9]{0,22}(\\.[0-9]{0,6})?",
        "[A-Za-z0-9]{0,70}",
        Just(String::new()),
    ]
}

/// Posts `body` to `path` of `router` and answers the status and the body as JSON (panics
/// when the answer is not JSON: every dialect answers with its JSON envelope).
pub async fn call(
    router: &axum::Router,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, serde_json::Value) {
    use tower::ServiceExt;
    let mut request = Request::post(path);
    if let Some(ct) = content_type {
        request = request.header(header::CONTENT_TYPE, ct);
    }
    let request = request.body(Body::from(body)).expect("a request");
    let response = router
        .clone()
        .oneshot(request)
        .await
        .unwrap_or_else(|e| match e {});
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("the answer's body");
    let json = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "status {status}: the answer is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&bytes)
        )
    });
    (status, json)
}

/// A current-thread runtime for a fuzz target's cases.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// A change to one field of a request that is signed again afterwards.
#[derive(Debug, Clone)]
pub enum FieldOp {
    Remove(usize),
    Set(usize, serde_json::Value),
    Add(String, serde_json::Value),
}

/// A value of a JSON field: a weird string, a number at the limits, or another JSON kind.
pub fn weird_json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value as Json;
    prop_oneof![
        4 => weird_value().prop_map(Json::String),
        1 => any::<i64>().prop_map(Json::from),
        1 => Just(Json::from(u64::MAX)),
        1 => Just(serde_json::json!(1.5e300)),
        1 => Just(Json::Null),
        1 => any::<bool>().prop_map(Json::Bool),
        1 => Just(serde_json::json!([1, "a"])),
        1 => Just(serde_json::json!({"k": "v"})),
    ]
}

/// One field change; added fields are named from `names` or at random.
pub fn field_op(names: &'static [&'static str]) -> impl Strategy<Value = FieldOp> {
    let name = prop_oneof![
        3 => (0..names.len()).prop_map(move |i| names[i].to_owned()),
        1 => "[A-Za-z_]{1,12}",
    ];
    prop_oneof![
        any::<usize>().prop_map(FieldOp::Remove),
        (any::<usize>(), weird_json()).prop_map(|(i, v)| FieldOp::Set(i, v)),
        (name, weird_json()).prop_map(|(k, v)| FieldOp::Add(k, v)),
    ]
}

/// `fields` with `ops` applied in turn.
pub fn apply_ops(
    mut fields: Vec<(String, serde_json::Value)>,
    ops: &[FieldOp],
) -> Vec<(String, serde_json::Value)> {
    for op in ops {
        match op {
            FieldOp::Remove(i) if !fields.is_empty() => {
                let n = fields.len();
                fields.remove(i % n);
            }
            FieldOp::Set(i, v) if !fields.is_empty() => {
                let n = fields.len();
                fields[i % n].1 = v.clone();
            }
            FieldOp::Add(k, v) => {
                fields.retain(|(name, _)| name != k);
                fields.push((k.clone(), v.clone()));
            }
            _ => {}
        }
    }
    fields
}

/// How often each answer code came, to show how deep the inputs reached.
#[derive(Default)]
pub struct Tally(std::sync::Mutex<std::collections::BTreeMap<String, u64>>);

impl Tally {
    pub fn add(&self, code: impl Into<String>) {
        let mut codes = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *codes.entry(code.into()).or_default() += 1;
    }

    /// Prints the codes seen, as `code×count`.
    pub fn print(&self, name: &str) {
        let codes = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let line: Vec<String> = codes.iter().map(|(c, n)| format!("{c}×{n}")).collect();
        eprintln!("fuzz {name}: answers {}", line.join(" "));
    }
}
