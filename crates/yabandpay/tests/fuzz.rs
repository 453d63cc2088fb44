//! Fuzzing the YabandPay endpoint `/Payments` (issue 15, part 4) through the dialect's router,
//! on the real lifecycle with a scripted terminal hub: arbitrary bytes, byte mutations of real
//! signed requests of every method, and field mutations of `data` and the top level signed
//! again. No input panics, answers a 5xx or −5000; an input that is not authentic is refused
//! with a parse, field, time, user or sign code.

use proptest::prelude::*;
use serde_json::{json, Value as Json};
use tillgate_domain::MerchantZone;
use tillgate_testkit::{fuzz, Kit};
use tillgate_wire::{json_object, Params, Value};
use tillgate_yabandpay::{sign, Code};

const MERCHANT: &str = "Y100001";
/// The docs' user and the secret that reproduces their vectors.
const USER: &str = "016683";
const SECRET: &str = "62184c09df1aeb63239e07079875be81";
const PATH: &str = "/Payments";
const NAMES: &[&str] = &[
    "amount",
    "currency",
    "order_id",
    "trade_id",
    "refund_amount",
    "refund_currency",
    "m_refund_id",
    "request_id",
    "tid",
    "timeout",
    "notify_url",
    "pay_method",
    "sub_pay_method",
    "auth_code",
    "tip_amount",
];

/// The codes of requests that are not authentic: missing or malformed fields, a stale time,
/// an unknown user or method, a bad sign.
const REFUSALS: &[&str] = &[
    "-3001", "-3003", "-3004", "-3005", "-3006", "-3007", "-3008",
];

fn text_of(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        Json::Null => String::new(),
        other => other.to_string(),
    }
}

/// A request of `method` with `data`, at `time`, signed by the user's secret.
fn signed(method: &Json, time: &Json, data: &[(String, Json)]) -> Vec<u8> {
    let mut fields = vec![
        ("user".to_owned(), USER.to_owned()),
        ("method".to_owned(), text_of(method)),
        ("time".to_owned(), text_of(time)),
    ];
    fields.extend(data.iter().map(|(k, v)| (k.clone(), text_of(v))));
    let object: serde_json::Map<String, Json> = data.iter().cloned().collect();
    serde_json::to_vec(&json!({
        "user": USER, "sign": sign::sign_fields(&fields, SECRET), "method": method, "time": time,
        "data": object,
    }))
    .unwrap()
}

/// Whether `body` is a request of the user signed with its secret.
fn authentic(body: &[u8]) -> bool {
    let Ok(map) = json_object(body) else {
        return false;
    };
    let text = |k: &str| {
        map.get(k)
            .and_then(|r| serde_json::from_str::<Json>(r.get()).ok())
    };
    let (Some(user), Some(sig), Some(method), Some(time), Some(data)) = (
        text("user"),
        text("sign"),
        text("method"),
        text("time"),
        map.get("data"),
    ) else {
        return false;
    };
    let Ok(data) = Params::parse(Some("application/json"), data.get().as_bytes()) else {
        return false;
    };
    let values = [
        Value::Text(text_of(&user)),
        Value::Text(text_of(&method)),
        Value::Text(text_of(&time)),
    ];
    let mut entries: Vec<(&str, &Value)> = vec![
        ("user", &values[0]),
        ("method", &values[1]),
        ("time", &values[2]),
    ];
    entries.extend(data.iter());
    user == json!(USER) && sign::verify(&entries, SECRET, &text_of(&sig))
}

fn obj(v: Json) -> Vec<(String, Json)> {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Real requests of every method: (method, data).
fn seeds(trade_id: &str) -> Vec<(&'static str, Vec<(String, Json)>)> {
    let t = trade_id;
    vec![
        (
            "v3.CreatePayments",
            obj(
                json!({"order_id": "fz-1", "amount": "0.01", "currency": "EUR", "pay_method": "online", "sub_pay_method": "iDEAL", "timeout": 30, "notify_url": "https://shop.example/n", "redirect_url": "https://shop.example/r", "description": "d"}),
            ),
        ),
        (
            "v3.BarcodePayment",
            obj(
                json!({"pay_method": "offline", "sub_pay_method": "WeChat Pay", "order_id": "fz-2", "auth_code": "134567890123456789", "amount": "1.50", "tip_amount": "0", "currency": "EUR", "description": "d", "notify_url": "https://shop.example/n"}),
            ),
        ),
        (
            "v3.QRcodePayment",
            obj(
                json!({"pay_method": "offline", "sub_pay_method": "QRcode", "order_id": "fz-3", "amount": "24.99", "currency": "eur", "description": "table 4", "timeout": "0"}),
            ),
        ),
        (
            "v3.POS",
            obj(
                json!({"tid": USER, "order_id": "fz-4", "amount": "2.00", "currency": "EUR", "request_id": "rq-1", "operation": "1", "description": "counter 3"}),
            ),
        ),
        (
            "v3.POSReversal",
            obj(json!({"tid": USER, "trade_id": t, "request_id": "rq-2"})),
        ),
        (
            "v3.POSCancel",
            obj(json!({"tid": USER, "trade_id": t, "request_id": "rq-3"})),
        ),
        ("v3.CancelPayment", obj(json!({"trade_id": t}))),
        ("v3.QueryOrder", obj(json!({"trade_id": t}))),
        (
            "v3.CreateRefund",
            obj(
                json!({"trade_id": t, "refund_amount": "0.01", "refund_currency": "EUR", "refund_description": "r", "m_refund_id": "fz-r-1"}),
            ),
        ),
        (
            "v3.CreateRefund",
            obj(json!({"trade_id": t, "refund_amount": "0.02", "refund_currency": "EUR"})),
        ),
        ("v3.QueryRefundOrder", obj(json!({"m_refund_id": "fz-r-1"}))),
        (
            "v3.CreatePaymentsAlipayWap",
            obj(json!({"order_id": "fz-5", "amount": "1", "currency": "EUR"})),
        ),
    ]
}

#[derive(Debug, Clone)]
enum Input {
    Bytes(Vec<u8>),
    Mutated {
        seed: usize,
        mutations: Vec<fuzz::Mutation>,
    },
    Resigned {
        seed: usize,
        ops: Vec<fuzz::FieldOp>,
        method: Option<Json>,
        time: Option<Json>,
    },
}

fn input(n: usize) -> impl Strategy<Value = Input> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..400).prop_map(Input::Bytes),
        (0..n, fuzz::mutations()).prop_map(|(seed, mutations)| Input::Mutated { seed, mutations }),
        (
            0..n,
            proptest::collection::vec(fuzz::field_op(NAMES), 0..4),
            proptest::option::weighted(0.1, fuzz::weird_json()),
            proptest::option::weighted(0.1, fuzz::weird_json()),
        )
            .prop_map(|(seed, ops, method, time)| Input::Resigned {
                seed,
                ops,
                method,
                time
            }),
    ]
}

#[test]
fn yabandpay_answers_every_input_with_a_precise_code() {
    let rt = fuzz::runtime();
    let (kit, router, trade_id) = rt.block_on(async {
        let kit = Kit::builder("fuzz-yabandpay").with_hub().build().await;
        let m = kit.merchant(MERCHANT, MerchantZone::parse("Europe/Amsterdam").unwrap()).await;
        kit.terminal_of(&m, USER, SECRET).await;
        let router = tillgate_yabandpay::router(kit.app.clone());
        let now = json!(kit.app.now().timestamp());
        let data = obj(json!({"pay_method": "offline", "sub_pay_method": "WeChat Pay", "order_id": "seed-paid", "auth_code": "134567890123456789", "amount": "25.00", "currency": "EUR", "description": "d"}));
        let body = signed(&json!("v3.BarcodePayment"), &now, &data);
        let (_, paid) = fuzz::call(&router, PATH, Some("application/json"), body).await;
        assert_eq!(paid["code"], "200", "{paid}");
        let t = paid["data"]["trade_id"].as_str().expect("a trade id").to_owned();
        (kit, router, t)
    });
    let now = json!(kit.app.now().timestamp());
    let seeds = seeds(&trade_id);
    let codes: Vec<&str> = Code::ALL
        .iter()
        .map(|c| c.as_str())
        .filter(|c| *c != "-5000")
        .collect();
    let tally = fuzz::Tally::default();
    fuzz::run("yabandpay endpoint", input(seeds.len()), |case| {
        let body = match &case {
            Input::Bytes(body) => body.clone(),
            Input::Mutated { seed, mutations } => {
                let (method, data) = &seeds[*seed];
                fuzz::apply(&signed(&json!(method), &now, data), mutations)
            }
            Input::Resigned {
                seed,
                ops,
                method,
                time,
            } => {
                let (m, data) = &seeds[*seed];
                let method = method.clone().unwrap_or(json!(m));
                let time = time.clone().unwrap_or(now.clone());
                signed(&method, &time, &fuzz::apply_ops(data.clone(), ops))
            }
        };
        let (status, answer) = rt.block_on(fuzz::call(
            &router,
            PATH,
            Some("application/json"),
            body.clone(),
        ));
        let code = answer["code"].as_str().unwrap_or("");
        tally.add(code);
        prop_assert!(
            status.as_u16() < 500,
            "status {} for {:?}: {}",
            status,
            case,
            answer
        );
        prop_assert!(
            codes.contains(&code),
            "code {:?} for {:?}: {}",
            code,
            case,
            answer
        );
        if !authentic(&body) {
            prop_assert!(
                REFUSALS.contains(&code),
                "not authentic, answered {}: {:?}",
                answer,
                case
            );
        }
        Ok(())
    });
    tally.print("yabandpay endpoint");
    drop(kit);
}
