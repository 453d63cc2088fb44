//! Fuzzing the Pockyt v3 endpoints (issue 15, part 4) through the dialect's router, on the
//! real lifecycle (SQLite store, sandbox wallet): arbitrary bytes, byte mutations of real
//! signed requests, and field mutations of real requests signed again (so they reach the
//! parsing behind the signature). No input panics or answers a 5xx or `000000`; an input
//! that is not authentic is refused with a parameter or signature code.

use proptest::prelude::*;
use serde_json::Value as Json;
use std::collections::BTreeMap;
use tillgate_domain::MerchantZone;
use tillgate_pockyt::params::Params;
use tillgate_pockyt::sign;
use tillgate_testkit::{fuzz, Kit};

/// Seed 002's merchant, store and token (the refund curl verifies with it).
const MERCHANT: &str = "200043";
const STORE: &str = "300014";
const TOKEN: &str = "5cbfb079f15b150122261c8537086d77a";

const ROUTES: &[&str] = &[
    "/app-instore/v3/add",
    "/app-instore/v3/pay",
    "/app-instore/v3/prepay",
    "/app-data-search/v3/cancel",
    "/app-data-search/v3/reverse",
    "/app-data-search/v3/refund",
    "/app-data-search/v3/tran-query",
];

/// The codes a request that is not authentic may get: a parameter is missing, malformed or
/// does not match, or the signature (or its store) is not right.
const REFUSALS: &[&str] = &["000020", "000021", "000022", "000023", "000030"];
/// Every code the dialect documents, less `000000` (system error).
const CODES: &[&str] = &[
    "000010", "000020", "000021", "000022", "000023", "000030", "000040", "000080", "000100",
];

/// A body of `fields`, signed with the store's token, as JSON or as a form.
fn signed(fields: &[(String, String)], form: bool) -> Vec<u8> {
    let object: serde_json::Map<String, Json> = fields
        .iter()
        .map(|(k, v)| (k.clone(), Json::String(v.clone())))
        .collect();
    let unsigned = serde_json::to_vec(&object).unwrap();
    let mut pairs: Vec<(String, String)> = fields.to_vec();
    if let Ok(params) = Params::parse(Some("application/json"), &unsigned) {
        pairs.push(("verifySign".into(), sign::sign(&params, TOKEN)));
    }
    if form {
        serde_urlencoded::to_string(&pairs).unwrap().into_bytes()
    } else {
        let object: BTreeMap<String, String> = pairs.into_iter().collect();
        serde_json::to_vec(&object).unwrap()
    }
}

fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut all = vec![
        ("merchantNo".to_owned(), MERCHANT.to_owned()),
        ("storeNo".to_owned(), STORE.to_owned()),
    ];
    all.extend(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    all
}

/// Real requests of every route: (route, fields).
fn seeds(transaction_no: &str) -> Vec<(usize, Vec<(String, String)>)> {
    let t = transaction_no;
    vec![
        (
            0,
            fields(&[
                ("amount", "13"),
                ("currency", "USD"),
                ("settleCurrency", "USD"),
                ("reference", "fuzz-add"),
                ("ipnUrl", "https://shop.example/ipn"),
                ("description", "coffee"),
                ("timeout", "120"),
            ]),
        ),
        (
            0,
            fields(&[
                ("amount", "0.01"),
                ("reference", "fuzz-add-2"),
                ("storeAdminNo", "cashier-1"),
            ]),
        ),
        (
            1,
            fields(&[
                ("transactionNo", t),
                ("paymentBarcode", "281234567890123456"),
                ("vendor", "alipay"),
            ]),
        ),
        (3, fields(&[("transactionNo", t)])),
        (4, fields(&[("reference", "seed-paid")])),
        (
            5,
            fields(&[
                ("transactionNo", t),
                ("refundAmount", "0.01"),
                ("currency", "USD"),
                ("settleCurrency", "USD"),
                ("refundReference", "fuzz-r-1"),
            ]),
        ),
        (
            5,
            fields(&[
                ("reference", "seed-paid"),
                ("refundAmount", "1.00"),
                ("currency", "USD"),
                ("settleCurrency", "USD"),
            ]),
        ),
        (6, fields(&[("transactionNo", t)])),
    ]
}

/// What a case sends.
#[derive(Debug, Clone)]
enum Input {
    Bytes {
        route: usize,
        body: Vec<u8>,
        form: bool,
    },
    Mutated {
        seed: usize,
        form: bool,
        mutations: Vec<fuzz::Mutation>,
    },
    Resigned {
        seed: usize,
        form: bool,
        ops: Vec<FieldOp>,
    },
}

#[derive(Debug, Clone)]
enum FieldOp {
    Remove(usize),
    Set(usize, String),
    Add(String, String),
}

fn field_op() -> impl Strategy<Value = FieldOp> {
    let names = prop_oneof![
        Just("amount".to_owned()),
        Just("refundAmount".to_owned()),
        Just("currency".to_owned()),
        Just("transactionNo".to_owned()),
        Just("reference".to_owned()),
        Just("timeout".to_owned()),
        Just("ipnUrl".to_owned()),
        Just("vendor".to_owned()),
        "[A-Za-z]{1,12}",
    ];
    prop_oneof![
        any::<usize>().prop_map(FieldOp::Remove),
        (any::<usize>(), fuzz::weird_value()).prop_map(|(i, v)| FieldOp::Set(i, v)),
        (names, fuzz::weird_value()).prop_map(|(k, v)| FieldOp::Add(k, v)),
    ]
}

fn input(n_seeds: usize) -> impl Strategy<Value = Input> {
    prop_oneof![
        (
            0..ROUTES.len(),
            proptest::collection::vec(any::<u8>(), 0..400),
            any::<bool>()
        )
            .prop_map(|(route, body, form)| Input::Bytes { route, body, form }),
        (0..n_seeds, any::<bool>(), fuzz::mutations()).prop_map(|(seed, form, mutations)| {
            Input::Mutated {
                seed,
                form,
                mutations,
            }
        }),
        (
            0..n_seeds,
            any::<bool>(),
            proptest::collection::vec(field_op(), 1..4)
        )
            .prop_map(|(seed, form, ops)| Input::Resigned { seed, form, ops }),
    ]
}

/// Whether `body` is a request of the store signed with its token.
fn authentic(body: &[u8], form: bool) -> bool {
    let ct = if form {
        "application/x-www-form-urlencoded"
    } else {
        "application/json"
    };
    let Ok(params) = Params::parse(Some(ct), body) else {
        return false;
    };
    let signature = params.text("verifySign").unwrap_or_default().to_owned();
    params.text("merchantNo") == Some(MERCHANT)
        && params.text("storeNo") == Some(STORE)
        && sign::verify(&params, TOKEN, &signature)
}

#[test]
fn pockyt_endpoints_answer_every_input_with_a_precise_code() {
    let rt = fuzz::runtime();
    let (kit, router, transaction_no) = rt.block_on(async {
        let kit = Kit::builder("fuzz-pockyt").build().await;
        let m = kit.merchant(MERCHANT, MerchantZone::utc()).await;
        kit.store_of(&m, STORE, TOKEN).await;
        let router = tillgate_pockyt::router(kit.app.clone());
        // A paid transaction for the seeds to refund, cancel and query.
        let add = signed(
            &fields(&[
                ("amount", "25.00"),
                ("currency", "USD"),
                ("settleCurrency", "USD"),
                ("reference", "seed-paid"),
            ]),
            false,
        );
        let (_, added) = fuzz::call(&router, ROUTES[0], Some("application/json"), add).await;
        let t = added["result"]["transactionNo"]
            .as_str()
            .expect("added")
            .to_owned();
        let pay = signed(
            &fields(&[
                ("transactionNo", &t),
                ("paymentBarcode", "281234567890123456"),
                ("vendor", "alipay"),
            ]),
            false,
        );
        let (_, paid) = fuzz::call(&router, ROUTES[1], Some("application/json"), pay).await;
        assert_eq!(paid["ret_code"], "000100", "{paid}");
        (kit, router, t)
    });
    let seeds = seeds(&transaction_no);
    let tally = fuzz::Tally::default();
    fuzz::run("pockyt endpoints", input(seeds.len()), |case| {
        let (route, body, form) = match &case {
            Input::Bytes { route, body, form } => (*route, body.clone(), *form),
            Input::Mutated {
                seed,
                form,
                mutations,
            } => {
                let (route, fields) = &seeds[*seed];
                (
                    *route,
                    fuzz::apply(&signed(fields, *form), mutations),
                    *form,
                )
            }
            Input::Resigned { seed, form, ops } => {
                let (route, fields) = &seeds[*seed];
                let mut fields = fields.clone();
                for op in ops {
                    match op {
                        FieldOp::Remove(i) if !fields.is_empty() => {
                            fields.remove(i % fields.len());
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
                (*route, signed(&fields, *form), *form)
            }
        };
        let ct = if form {
            "application/x-www-form-urlencoded"
        } else {
            "application/json"
        };
        let (status, answer) =
            rt.block_on(fuzz::call(&router, ROUTES[route], Some(ct), body.clone()));
        let code = answer["ret_code"].as_str().unwrap_or("");
        tally.add(code);
        prop_assert!(
            status.as_u16() < 500,
            "status {} for {:?}: {}",
            status,
            case,
            answer
        );
        prop_assert!(
            CODES.contains(&code),
            "code {:?} for {:?}: {}",
            code,
            case,
            answer
        );
        if !authentic(&body, form) {
            prop_assert!(
                REFUSALS.contains(&code),
                "not authentic, answered {}: {:?}",
                answer,
                case
            );
        }
        Ok(())
    });
    tally.print("pockyt endpoints");
    drop(kit);
}
