//! Fuzzing the unified (Jeepay-style) endpoints (issue 15, part 4) through the dialect's
//! router, on the real lifecycle: arbitrary bytes, byte mutations of real signed requests
//! (among them the shapes of the Jeepay sign vectors in `data/`), and field mutations signed
//! again. No input panics, answers a 5xx or code 10; an input that is not authentic is
//! refused with code 11 (parameters) or 9999 (sign, credentials).

use proptest::prelude::*;
use serde_json::{json, Value as Json};
use tillgate_domain::MerchantZone;
use tillgate_testkit::{fuzz, Kit};
use tillgate_unified::sign;
use tillgate_wire::Params;

/// The merchant, app and key of the sign vectors (`data/jeepay-sign-vectors.json`).
const MCH: &str = "M1621873433953";
const APP: &str = "60cc09bce4b0f1c0b83761c9";
const SECRET: &str = "offline-test-key";
const VECTORS: &str = include_str!("data/jeepay-sign-vectors.json");

/// Each route with the fields of Jeepay's request bean (the subset its sign may cover).
const ROUTES: &[(&str, &[&str])] = &[
    (
        "/api/pay/unifiedOrder",
        &[
            "mchOrderNo",
            "wayCode",
            "amount",
            "currency",
            "clientIp",
            "subject",
            "body",
            "notifyUrl",
            "returnUrl",
            "expiredTime",
            "channelExtra",
            "extParam",
            "divisionMode",
        ],
    ),
    ("/api/pay/query", &["payOrderId", "mchOrderNo"]),
    ("/api/pay/close", &["payOrderId", "mchOrderNo"]),
    (
        "/api/pay/cancel",
        &[
            "payOrderId",
            "mchOrderNo",
            "clientIp",
            "notifyUrl",
            "channelExtra",
            "extParam",
        ],
    ),
    ("/api/cancel/query", &["cancelOrderId"]),
    (
        "/api/refund/refundOrder",
        &[
            "payOrderId",
            "mchOrderNo",
            "mchRefundNo",
            "refundAmount",
            "currency",
            "refundReason",
            "clientIp",
            "notifyUrl",
            "channelExtra",
            "extParam",
        ],
    ),
    ("/api/refund/query", &["refundOrderId", "mchRefundNo"]),
];
const COMMON: [&str; 6] = ["mchNo", "appId", "reqTime", "version", "signType", "sign"];
const NAMES: &[&str] = &[
    "amount",
    "refundAmount",
    "currency",
    "mchOrderNo",
    "payOrderId",
    "mchRefundNo",
    "wayCode",
    "notifyUrl",
    "expiredTime",
    "channelExtra",
    "reqTime",
    "sign",
];

/// A request of `fields` (the common ones added) signed with the app's secret, the SDK's way.
fn signed(fields: &[(String, Json)]) -> Vec<u8> {
    let mut object = serde_json::Map::new();
    object.insert("mchNo".into(), json!(MCH));
    object.insert("appId".into(), json!(APP));
    object.insert("reqTime".into(), json!("1700000000123"));
    object.insert("version".into(), json!("1.0"));
    object.insert("signType".into(), json!("MD5"));
    for (k, v) in fields {
        object.insert(k.clone(), v.clone());
    }
    let unsigned = serde_json::to_vec(&Json::Object(object.clone())).unwrap();
    if let Ok(params) = Params::parse(Some("application/json"), &unsigned) {
        object.insert("sign".into(), json!(sign::sign_params(&params, SECRET)));
    }
    serde_json::to_vec(&Json::Object(object)).unwrap()
}

fn authentic(route: usize, body: &[u8]) -> bool {
    let Ok(params) = Params::parse(Some("application/json"), body) else {
        return false;
    };
    let known: Vec<&str> = COMMON.iter().chain(ROUTES[route].1).copied().collect();
    let signature = params.text("sign").unwrap_or_default().to_owned();
    params.text("mchNo") == Some(MCH)
        && params.text("appId") == Some(APP)
        && sign::verify(&params, SECRET, &known, &signature)
}

fn obj(fields: Json) -> Vec<(String, Json)> {
    fields
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Real requests of every route, and an order carrying each sign vector's parameters.
fn seeds(pay_order_id: &str) -> Vec<(usize, Vec<(String, Json)>)> {
    let p = pay_order_id;
    let mut seeds = vec![
        (
            0,
            obj(
                json!({"mchOrderNo": "fuzz-o-1", "wayCode": "ALI_BAR", "amount": 100, "currency": "cny", "subject": "s", "body": "b", "clientIp": "127.0.0.1", "notifyUrl": "https://shop.example/n", "channelExtra": "{\"authCode\":\"281234567890123456\"}"}),
            ),
        ),
        (
            0,
            obj(
                json!({"mchOrderNo": "fuzz-o-2", "wayCode": "QR_CASHIER", "amount": 1, "currency": "cny", "subject": "s", "body": "b", "expiredTime": 600}),
            ),
        ),
        (1, obj(json!({"payOrderId": p}))),
        (1, obj(json!({"mchOrderNo": "seed-paid"}))),
        (2, obj(json!({"mchOrderNo": "fuzz-o-2"}))),
        (
            3,
            obj(json!({"payOrderId": p, "notifyUrl": "https://shop.example/c"})),
        ),
        (4, obj(json!({"cancelOrderId": "C217000000000000001"}))),
        (
            5,
            obj(
                json!({"payOrderId": p, "mchRefundNo": "fuzz-r-1", "refundAmount": 1, "currency": "cny", "refundReason": "r"}),
            ),
        ),
        (6, obj(json!({"mchRefundNo": "fuzz-r-1"}))),
    ];
    let vectors: Json = serde_json::from_str(VECTORS).unwrap();
    for v in vectors["vectors"].as_array().unwrap() {
        let mut fields = seeds[0].1.clone();
        for (k, value) in v["params"].as_object().unwrap() {
            fields.retain(|(name, _)| name != k);
            fields.push((k.clone(), value.clone()));
        }
        seeds.push((0, fields));
    }
    seeds
}

#[derive(Debug, Clone)]
enum Input {
    Bytes {
        route: usize,
        body: Vec<u8>,
    },
    Mutated {
        seed: usize,
        mutations: Vec<fuzz::Mutation>,
    },
    Resigned {
        seed: usize,
        ops: Vec<fuzz::FieldOp>,
    },
}

fn input(n: usize) -> impl Strategy<Value = Input> {
    prop_oneof![
        (
            0..ROUTES.len(),
            proptest::collection::vec(any::<u8>(), 0..400)
        )
            .prop_map(|(route, body)| Input::Bytes { route, body }),
        (0..n, fuzz::mutations()).prop_map(|(seed, mutations)| Input::Mutated { seed, mutations }),
        (0..n, proptest::collection::vec(fuzz::field_op(NAMES), 1..4))
            .prop_map(|(seed, ops)| Input::Resigned { seed, ops }),
    ]
}

#[test]
fn unified_endpoints_answer_every_input_with_a_precise_code() {
    let rt = fuzz::runtime();
    let (kit, router, pay_order_id) = rt.block_on(async {
        let kit = Kit::builder("fuzz-unified").build().await;
        let m = kit.merchant(MCH, MerchantZone::utc()).await;
        kit.app_of(&m, APP, SECRET).await;
        let router = tillgate_unified::router(kit.app.clone());
        let order = signed(&obj(json!({"mchOrderNo": "seed-paid", "wayCode": "ALI_BAR", "amount": 2500, "currency": "cny", "subject": "s", "body": "b", "channelExtra": "{\"authCode\":\"281234567890123456\"}"})));
        let (_, paid) = fuzz::call(&router, ROUTES[0].0, Some("application/json"), order).await;
        assert_eq!(paid["code"], 0, "{paid}");
        let id = paid["data"]["payOrderId"].as_str().expect("an order id").to_owned();
        (kit, router, id)
    });
    let seeds = seeds(&pay_order_id);
    let tally = fuzz::Tally::default();
    fuzz::run("unified endpoints", input(seeds.len()), |case| {
        let (route, body) = match &case {
            Input::Bytes { route, body } => (*route, body.clone()),
            Input::Mutated { seed, mutations } => (
                seeds[*seed].0,
                fuzz::apply(&signed(&seeds[*seed].1), mutations),
            ),
            Input::Resigned { seed, ops } => (
                seeds[*seed].0,
                signed(&fuzz::apply_ops(seeds[*seed].1.clone(), ops)),
            ),
        };
        let (status, answer) = rt.block_on(fuzz::call(
            &router,
            ROUTES[route].0,
            Some("application/json"),
            body.clone(),
        ));
        let code = answer["code"].as_i64().unwrap_or(-1);
        tally.add(code.to_string());
        prop_assert!(
            status.as_u16() < 500,
            "status {} for {:?}: {}",
            status,
            case,
            answer
        );
        prop_assert!(
            [0, 11, 9999].contains(&code),
            "code {} for {:?}: {}",
            code,
            case,
            answer
        );
        if !authentic(route, &body) {
            prop_assert!(
                [11, 9999].contains(&code),
                "not authentic, answered {}: {:?}",
                answer,
                case
            );
        }
        Ok(())
    });
    tally.print("unified endpoints");
    drop(kit);
}
