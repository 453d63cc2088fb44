//! The workloads: what one operation sends and what answer counts as success.
//!
//! Every request is a real signed Pockyt v3 request over HTTP. Keys (references, refund
//! references) carry the run's tag, so no two runs on one database collide and no operation is
//! an idempotent replay unless a workload means it to be.

use crate::client::{Answer, Conn};
use crate::pockyt::{self, decimal_2, seeded_transaction_no, Rng, Signer};
use serde::Serialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Baseline (a): a signed query to the minimal server, no store.
    BaselineHttp,
    /// A query with a forged verifySign, which the gateway must refuse (000030).
    BadSignature,
    /// tran-query of a random existing transaction, by transactionNo.
    Query,
    /// A 0.01-0.09 partial refund of a random existing paid transaction, unique refundReference.
    Refund,
    /// add, then pay with a barcode (approved by the sandbox wallet): one operation, two requests.
    AddPay,
    /// cancel of a transaction added (unmeasured) before the run.
    Cancel,
    /// query 50%, refund 20%, add+pay 15%, add+cancel 10%, forged signature 5%.
    Mix,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::BaselineHttp => "baseline-http",
            Workload::BadSignature => "bad-signature",
            Workload::Query => "query",
            Workload::Refund => "refund",
            Workload::AddPay => "add-pay",
            Workload::Cancel => "cancel",
            Workload::Mix => "mix",
        }
    }

    /// Whether the workload makes refunds (each acknowledged one is checked to be stored).
    pub fn refunds(self) -> bool {
        matches!(self, Workload::Refund | Workload::Mix)
    }

    /// Whether the workload picks existing transactions to refund or query (through an HTTP
    /// wallet, those are paid through it before the run).
    pub fn picks_paid_transactions(self) -> bool {
        matches!(self, Workload::Refund | Workload::Mix | Workload::Query)
    }

    /// Whether the workload changes the store (and so has operations per commit to report).
    pub fn writes(self) -> bool {
        matches!(
            self,
            Workload::Refund | Workload::AddPay | Workload::Cancel | Workload::Mix
        )
    }
}

/// Which wallet the gateway under test calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Wallet {
    /// The in-process sandbox wallet (the default of sandbox mode).
    #[default]
    Sandbox,
    /// The HTTP wallet simulator, `tillgate wallet-sim`, in a process of its own with no added
    /// latency: the production path (a signed HTTP call per payment and refund).
    Http,
}

/// Transactions added before a cancel run, each cancelled once.
#[derive(Debug, Default)]
pub struct CancelPool {
    references: Vec<String>,
    next: AtomicUsize,
}

impl CancelPool {
    pub fn new(references: Vec<String>) -> CancelPool {
        CancelPool {
            references,
            next: AtomicUsize::new(0),
        }
    }

    fn take(&self) -> Option<&str> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.references.get(i).map(String::as_str)
    }
}

/// What every worker of a run shares.
#[derive(Debug)]
pub struct Shared {
    pub signer: Signer,
    /// Seeded paid transactions are indices `0..existing`.
    pub existing: u64,
    /// Prefix of every key this run creates.
    pub tag: String,
    pub cancel_pool: Option<CancelPool>,
    /// Where added transactions' and refunds' notifications go (`ipnUrl`), when anywhere: the
    /// soak's receiver, so that the outbox is exercised.
    pub ipn_url: Option<String>,
    /// Paid transactions (their `transactionNo`) that queries and refunds pick from instead of
    /// the seeded ones: those paid through an HTTP wallet before the run, which the wallet
    /// knows (it refunds only payments it approved).
    pub paid: Option<Vec<String>>,
    /// Keep every acknowledged refund's reference, to check after the run that it is stored.
    pub track_refunds: bool,
}

impl Shared {
    /// Shared state for a run on `existing` seeded transactions, keys prefixed with `tag`.
    pub fn new(existing: u64, tag: String) -> Shared {
        Shared {
            signer: Signer::default(),
            existing,
            tag,
            cancel_pool: None,
            ipn_url: None,
            paid: None,
            track_refunds: true,
        }
    }
}

/// What one operation came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    Ok {
        requests: u32,
    },
    Failed {
        requests: u32,
        why: String,
    },
    /// Nothing left to do (the cancel pool is used up); the worker stops.
    Exhausted,
}

/// One worker's state: its random source and key sequence.
pub struct Worker {
    id: u64,
    seq: u64,
    rng: Rng,
    shared: Arc<Shared>,
    /// The refund references the gateway answered as succeeded.
    acknowledged_refunds: Vec<String>,
}

const SUCCESS: &str = "\"ret_code\":\"000100\"";
const NO_RIGHTS: &str = "\"ret_code\":\"000030\"";

/// The first string value of `"key":"…"` in a JSON text (the gateway writes no spaces and no
/// escapes in the fields read here).
pub fn json_string<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let needle = format!("\"{key}\":\"");
    let start = text.find(&needle)? + needle.len();
    let len = text[start..].find('"')?;
    Some(&text[start..start + len])
}

fn check(answer: &Answer, needles: &[&str]) -> Result<(), String> {
    if answer.status == 200 && needles.iter().all(|n| answer.contains(n)) {
        return Ok(());
    }
    let mut body = answer.body_text().to_owned();
    body.truncate(300);
    Err(format!("HTTP {}: {body}", answer.status))
}

impl Worker {
    pub fn new(id: u64, seed: u64, shared: Arc<Shared>) -> Worker {
        Worker {
            id,
            seq: 0,
            rng: Rng::new(seed ^ id.wrapping_mul(0x2545_F491_4F6C_DD1D)),
            shared,
            acknowledged_refunds: Vec::new(),
        }
    }

    /// The refund references acknowledged as succeeded so far; the list starts afresh.
    pub fn take_acknowledged_refunds(&mut self) -> Vec<String> {
        std::mem::take(&mut self.acknowledged_refunds)
    }

    fn key(&mut self, kind: char) -> String {
        self.seq += 1;
        format!("{}{kind}{}-{}", self.shared.tag, self.id, self.seq)
    }

    fn existing_transaction(&mut self) -> String {
        if let Some(paid) = self.shared.paid.as_ref().filter(|p| !p.is_empty()) {
            let i = self.rng.below(paid.len() as u64) as usize;
            return paid[i].clone();
        }
        seeded_transaction_no(self.rng.below(self.shared.existing))
    }

    /// Runs one operation of `workload` on `conn`.
    pub async fn op(&mut self, workload: Workload, conn: &mut Conn) -> OpResult {
        let result = match workload {
            Workload::BaselineHttp | Workload::Query => self.query(conn).await.map(|_| 1),
            Workload::BadSignature => self.forged(conn).await.map(|_| 1),
            Workload::Refund => self.refund(conn).await.map(|_| 1),
            Workload::AddPay => self.add_pay(conn).await,
            Workload::Cancel => match self.shared.cancel_pool.as_ref().and_then(CancelPool::take) {
                None => return OpResult::Exhausted,
                Some(r) => {
                    let r = r.to_owned();
                    self.cancel(conn, &r).await.map(|_| 1)
                }
            },
            Workload::Mix => self.mix(conn).await,
        };
        match result {
            Ok(requests) => OpResult::Ok { requests },
            Err((requests, why)) => OpResult::Failed { requests, why },
        }
    }

    async fn send(
        &self,
        conn: &mut Conn,
        path: &str,
        body: &[u8],
        needles: &[&str],
    ) -> Result<(), String> {
        match conn.post(path, body).await {
            Ok(a) => check(&a, needles),
            Err(e) => Err(format!("{path}: {e}")),
        }
    }

    async fn query(&mut self, conn: &mut Conn) -> Result<(), (u32, String)> {
        let t = self.existing_transaction();
        let body = self.shared.signer.body(&[("transactionNo", &t)]);
        self.send(conn, pockyt::QUERY, &body, &[SUCCESS])
            .await
            .map_err(|e| (1, e))
    }

    async fn forged(&mut self, conn: &mut Conn) -> Result<(), (u32, String)> {
        let t = self.existing_transaction();
        let body = self.shared.signer.forged_body(&[("transactionNo", &t)]);
        self.send(conn, pockyt::QUERY, &body, &[NO_RIGHTS])
            .await
            .map_err(|e| (1, e))
    }

    async fn refund(&mut self, conn: &mut Conn) -> Result<(), (u32, String)> {
        let t = self.existing_transaction();
        // 1 to 9 cents: never ends in 61, which the sandbox wallet declines.
        let amount = decimal_2(1 + i64::try_from(self.rng.below(9)).unwrap_or(0));
        let key = self.key('r');
        let mut pairs = vec![
            ("transactionNo", t.as_str()),
            ("refundAmount", &amount),
            ("currency", "USD"),
            ("settleCurrency", "USD"),
            ("refundReference", &key),
        ];
        if let Some(url) = &self.shared.ipn_url {
            pairs.push(("ipnUrl", url));
        }
        let body = self.shared.signer.body(&pairs);
        self.send(
            conn,
            pockyt::REFUND,
            &body,
            &[SUCCESS, "\"status\":\"success\""],
        )
        .await
        .map_err(|e| (1, e))?;
        if self.shared.track_refunds {
            self.acknowledged_refunds.push(key);
        }
        Ok(())
    }

    /// Adds a transaction; returns its reference.
    pub async fn add(&mut self, conn: &mut Conn) -> Result<String, String> {
        // 1.00 to 999.49 with cents of 00 to 49: the sandbox wallet gives endings from 51 up
        // their special answers (declined, unknown, in progress), and every operation here is
        // meant to be approved.
        let dollars = 1 + i64::try_from(self.rng.below(999)).unwrap_or(0);
        let cents = 100 * dollars + i64::try_from(self.rng.below(50)).unwrap_or(0);
        self.add_of(conn, cents).await
    }

    /// Adds a transaction of `cents`; returns its reference.
    async fn add_of(&mut self, conn: &mut Conn, cents: i64) -> Result<String, String> {
        let reference = self.key('a');
        let amount = decimal_2(cents);
        let mut pairs = vec![
            ("amount", amount.as_str()),
            ("currency", "USD"),
            ("settleCurrency", "USD"),
            ("reference", &reference),
        ];
        if let Some(url) = &self.shared.ipn_url {
            pairs.push(("ipnUrl", url));
        }
        let body = self.shared.signer.body(&pairs);
        self.send(conn, pockyt::ADD, &body, &[SUCCESS]).await?;
        Ok(reference)
    }

    async fn add_pay(&mut self, conn: &mut Conn) -> Result<u32, (u32, String)> {
        let reference = self.add(conn).await.map_err(|e| (1, e))?;
        self.pay(conn, &reference).await.map_err(|e| (2, e))?;
        Ok(2)
    }

    /// Pays the added transaction `reference` by barcode; returns the answer's body.
    async fn pay(&mut self, conn: &mut Conn, reference: &str) -> Result<String, String> {
        let barcode = format!("28{:016}", self.rng.below(10_000_000_000_000_000));
        let body = self.shared.signer.body(&[
            ("reference", reference),
            ("paymentBarcode", &barcode),
            ("vendor", "alipay"),
        ]);
        match conn.post(pockyt::PAY, &body).await {
            Ok(a) => {
                check(&a, &[SUCCESS, "\"transactionStatus\":\"success\""])?;
                Ok(a.body_text().to_owned())
            }
            Err(e) => Err(format!("{}: {e}", pockyt::PAY)),
        }
    }

    /// Adds and pays a transaction of 100.00 (room for a hundred refunds of up to 0.09, the
    /// most the wallet simulator takes on one order); returns its `transactionNo`.
    pub async fn paid_transaction(&mut self, conn: &mut Conn) -> Result<String, String> {
        let reference = self.add_of(conn, 10_000).await?;
        let answer = self.pay(conn, &reference).await?;
        json_string(&answer, "transactionNo")
            .map(str::to_owned)
            .ok_or_else(|| format!("a pay answer without a transactionNo: {answer}"))
    }

    async fn cancel(&mut self, conn: &mut Conn, reference: &str) -> Result<(), (u32, String)> {
        let body = self.shared.signer.body(&[("reference", reference)]);
        self.send(
            conn,
            pockyt::CANCEL,
            &body,
            &[SUCCESS, "\"status\":\"success\""],
        )
        .await
        .map_err(|e| (1, e))
    }

    async fn mix(&mut self, conn: &mut Conn) -> Result<u32, (u32, String)> {
        match self.rng.below(100) {
            0..50 => self.query(conn).await.map(|_| 1),
            50..70 => self.refund(conn).await.map(|_| 1),
            70..85 => self.add_pay(conn).await,
            85..95 => {
                let reference = self.add(conn).await.map_err(|e| (1, e))?;
                self.cancel(conn, &reference)
                    .await
                    .map(|_| 2)
                    .map_err(|(_, e)| (2, e))
            }
            _ => self.forged(conn).await.map(|_| 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_string_field_is_read_from_an_answer() {
        let body = r#"{"result":{"transactionNo":"227000000000001","amount":"100.00"},"ret_code":"000100"}"#;
        assert_eq!(json_string(body, "transactionNo"), Some("227000000000001"));
        assert_eq!(json_string(body, "ret_code"), Some("000100"));
        assert_eq!(json_string(body, "missing"), None);
        assert_eq!(
            json_string(r#"{"transactionNo":"12"#, "transactionNo"),
            None
        );
    }
}
