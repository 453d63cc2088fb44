//! What the SQL store backends share: turning rows into records (each checked against the
//! domain's invariants as it loads) through a four-method [`Columns`] view of a row, so that the
//! SQLite and PostgreSQL backends read the same columns the same way.

pub mod books;
pub mod console;

use chrono::{DateTime, Utc};
use tillgate_core::service::Lifecycle;
use tillgate_core::store::Conflict;
use tillgate_core::*;
use tillgate_domain::{
    CancelKind, CancelState, Currency, MerchantZone, Money, PaymentState, RefundState,
};

/// Typed access to a row's columns by name; each backend implements it for its row type.
pub trait Columns {
    fn int(&self, col: &str) -> Result<i64, StoreError>;
    fn opt_int(&self, col: &str) -> Result<Option<i64>, StoreError>;
    fn text(&self, col: &str) -> Result<String, StoreError>;
    fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError>;
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

/// A stored timestamp (UTC milliseconds since the epoch).
pub fn time(ms: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| corrupt("timestamp"))
}

fn currency(code: &str) -> Result<Currency, StoreError> {
    Currency::from_code(code).ok_or_else(|| corrupt("currency"))
}

pub fn merchant(row: &impl Columns) -> Result<MerchantRecord, StoreError> {
    Ok(MerchantRecord {
        id: row.int("id")?,
        merchant_no: row.text("merchant_no")?,
        zone: MerchantZone::parse(&row.text("zone")?).ok_or_else(|| corrupt("zone"))?,
        sandbox: row.int("sandbox")? != 0,
        created_at: time(row.int("created_at")?)?,
        notify_schedule: row.opt_text("notify_schedule")?,
        cors_origins: row
            .opt_text("cors_origins")?
            .map(|o| o.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default(),
        refund_reference_required: row.opt_int("refund_reference_required")?.map(|v| v != 0),
        display_name: row.opt_text("display_name")?,
        refund_authority: match row.opt_text("refund_authority")? {
            None => tillgate_core::console::RefundAuthority::Immediate,
            Some(a) => tillgate_core::console::RefundAuthority::parse(&a)
                .ok_or_else(|| corrupt("refund authority"))?,
        },
        approval_threshold_minor: row.opt_int("approval_threshold_minor")?,
        api_refunds_need_approval: row.opt_int("api_refund_approval")?.unwrap_or(0) != 0,
    })
}

pub fn app_row(row: &impl Columns) -> Result<AppRow, StoreError> {
    Ok(AppRow {
        merchant: merchant(row)?,
        app_id: row.text("app_id")?,
        secret_sealed: row.text("secret_sealed")?,
    })
}

pub fn store_row(row: &impl Columns) -> Result<StoreRow, StoreError> {
    Ok(StoreRow {
        merchant: merchant(row)?,
        store_no: row.text("store_no")?,
        token_sealed: row.text("token_sealed")?,
        default_currency: row
            .opt_text("default_currency")?
            .map(|c| currency(&c))
            .transpose()?,
    })
}

pub fn payment(row: &impl Columns) -> Result<PaymentRecord, StoreError> {
    let cur = currency(&row.text("currency")?)?;
    let amount =
        Money::from_minor(row.int("amount_minor")?, cur).ok_or_else(|| corrupt("amount"))?;
    let state = PaymentState::parse(&row.text("state")?).ok_or_else(|| corrupt("state"))?;
    let cancel_in_flight = row
        .opt_text("cancel_in_flight")?
        .map(|k| CancelKind::parse(&k).ok_or_else(|| corrupt("cancel_in_flight")))
        .transpose()?;
    let paid_at = row.opt_int("paid_at")?.map(time).transpose()?;
    let payment = Lifecycle::restore_payment(
        amount,
        state,
        row.int("refunded_minor")?,
        row.int("reserved_minor")?,
        cancel_in_flight,
        paid_at,
    )?;
    Ok(PaymentRecord {
        id: row.int("id")?,
        transaction_no: row.text("transaction_no")?,
        merchant_id: row.int("merchant_id")?,
        merchant_no: row.text("merchant_no")?,
        store_no: row.text("store_no")?,
        reference: row.text("reference")?,
        settle_currency: currency(&row.text("settle_currency")?)?,
        description: row.opt_text("description")?,
        notify_url: row.opt_text("notify_url")?,
        vendor: row.opt_text("vendor")?,
        dialect: dialect(&row.text("dialect")?)?,
        extra: row.opt_text("extra")?,
        fingerprint: row.text("fingerprint")?,
        pay_fingerprint: row.opt_text("pay_fingerprint")?,
        payment,
        created_at: time(row.int("created_at")?)?,
        updated_at: time(row.int("updated_at")?)?,
        expires_at: time(row.int("expires_at")?)?,
        version: row.int("version")?,
    })
}

pub fn refund(row: &impl Columns) -> Result<RefundRecord, StoreError> {
    let cur = currency(&row.text("currency")?)?;
    Ok(RefundRecord {
        id: row.int("id")?,
        refund_no: row.text("refund_no")?,
        payment_id: row.int("payment_id")?,
        merchant_id: row.int("merchant_id")?,
        refund_reference: row.opt_text("refund_reference")?,
        amount: Money::from_minor(row.int("amount_minor")?, cur)
            .ok_or_else(|| corrupt("refund amount"))?,
        state: RefundState::from_code(row.int("state")?).ok_or_else(|| corrupt("refund state"))?,
        fingerprint: row.text("fingerprint")?,
        notify_url: row.opt_text("notify_url")?,
        extra: row.opt_text("extra")?,
        created_at: time(row.int("created_at")?)?,
        updated_at: time(row.int("updated_at")?)?,
    })
}

pub fn cancel(row: &impl Columns) -> Result<CancelRecord, StoreError> {
    Ok(CancelRecord {
        id: row.int("id")?,
        cancel_no: row.text("cancel_no")?,
        payment_id: row.int("payment_id")?,
        merchant_id: row.int("merchant_id")?,
        kind: CancelKind::parse(&row.text("kind")?).ok_or_else(|| corrupt("cancel kind"))?,
        state: CancelState::from_code(row.int("state")?).ok_or_else(|| corrupt("cancel state"))?,
        notify_url: row.opt_text("notify_url")?,
        extra: row.opt_text("extra")?,
        created_at: time(row.int("created_at")?)?,
        updated_at: time(row.int("updated_at")?)?,
    })
}

pub fn event(row: &impl Columns) -> Result<EventRecord, StoreError> {
    Ok(EventRecord {
        payment_id: row.int("payment_id")?,
        at: time(row.int("at")?)?,
        kind: row.text("kind")?,
        detail: row.text("detail")?,
    })
}

pub fn terminal_row(
    row: &impl Columns,
) -> Result<tillgate_core::terminal::TerminalRow, StoreError> {
    Ok(tillgate_core::terminal::TerminalRow {
        merchant: merchant(row)?,
        tid: row.text("tid")?,
        secret_sealed: row.text("secret_sealed")?,
        online_node: row.opt_text("online_node")?,
        last_seen_at: row.opt_int("last_seen_at")?.map(time).transpose()?,
    })
}

pub fn presence(row: &impl Columns) -> Result<tillgate_core::terminal::Presence, StoreError> {
    Ok(tillgate_core::terminal::Presence {
        node: row.opt_text("online_node")?,
        last_seen_at: row.opt_int("last_seen_at")?.map(time).transpose()?,
    })
}

pub fn command(row: &impl Columns) -> Result<tillgate_core::terminal::CommandRecord, StoreError> {
    use tillgate_core::terminal::{CommandOutcome, CommandRecord, CommandState};
    let command = serde_json_from(&row.text("payload")?)?;
    Ok(CommandRecord {
        command,
        tid: row.text("tid")?,
        payment_id: row.int("payment_id")?,
        cancel_id: row.opt_int("cancel_id")?,
        state: CommandState::parse(&row.text("state")?).ok_or_else(|| corrupt("command state"))?,
        outcome: row
            .opt_text("outcome")?
            .map(|o| CommandOutcome::parse(&o).ok_or_else(|| corrupt("command outcome")))
            .transpose()?,
        message: row.opt_text("message")?,
    })
}

fn serde_json_from(text: &str) -> Result<tillgate_core::terminal::TerminalCommand, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("command payload: {e}")))
}

pub fn outbox(row: &impl Columns) -> Result<OutboxRecord, StoreError> {
    Ok(OutboxRecord {
        id: row.int("id")?,
        merchant_id: row.int("merchant_id")?,
        payment_id: row.int("payment_id")?,
        dialect: dialect(&row.text("dialect")?)?,
        topic: topic(&row.text("topic")?)?,
        target_url: row.text("target_url")?,
        snapshot: row.text("snapshot")?,
        status: OutboxStatus::parse(&row.text("status")?)
            .ok_or_else(|| corrupt("outbox status"))?,
        attempts: row.int("attempts")?,
        next_attempt_at: time(row.int("next_attempt_at")?)?,
        created_at: time(row.int("created_at")?)?,
        last_attempt_at: row.opt_int("last_attempt_at")?.map(time).transpose()?,
        delivered_at: row.opt_int("delivered_at")?.map(time).transpose()?,
    })
}

pub fn attempt(row: &impl Columns) -> Result<AttemptRecord, StoreError> {
    Ok(AttemptRecord {
        outbox_id: row.int("outbox_id")?,
        attempt: row.int("attempt")?,
        at: time(row.int("at")?)?,
        http_status: row.opt_int("http_status")?,
        response_head: row.text("response_head")?,
        latency_ms: row.int("latency_ms")?,
        error: row.opt_text("error")?,
    })
}

/// The SQL that leases due notifications, for both backends (placeholders `?1`.. are rewritten
/// to `$1`.. for PostgreSQL): `?1` now, `?2` the lease's end, `?3` the most rows, `?4` the most
/// of one merchant, `?5` what this node holds already ([`held_json`]).
///
/// Its cost does not grow with the backlog. `m` lists the merchants with pending rows, one
/// index probe each (a loose scan of the partial index `outbox_pending`, which holds pending
/// rows only, by merchant and due time). A merchant at its limit is dropped there; of each other
/// merchant, at most `?4` of its first due rows are read from the same index, skipping rows
/// leased elsewhere and rows behind an earlier pending notification of their payment. Each
/// candidate then gets its place among its merchant's (held ones first), and only places up to
/// the limit are leased, oldest due first. A merchant with 10⁵ rows waiting behind a receiver
/// that never answers costs one probe, not 10⁵ rows. The outer conditions are checked again on
/// the row itself, so two nodes that pick the same row cannot both lease it.
pub fn claim_sql(postgres: bool) -> String {
    let (held, indexed, outer, lock) = if postgres {
        (
            "COALESCE((CAST(?5 AS text)::jsonb ->> CAST(m.id AS text))::bigint, 0)",
            "",
            "",
            " FOR UPDATE SKIP LOCKED",
        )
    } else {
        (
            "COALESCE(json_extract(?5, '$.\"' || m.id || '\"'), 0)",
            // Without statistics, SQLite would walk `outbox_due` (status first) instead, for
            // the listing and for the update's own conditions; the update finds its rows by
            // id (NOT INDEXED leaves the primary key usable).
            " INDEXED BY outbox_pending",
            " NOT INDEXED",
            "",
        )
    };
    // The first due rows of merchant `h.id` that this lease may take.
    let first = |columns: &str| {
        format!(
            "SELECT {columns} FROM outbox o \
         WHERE o.status = '{pending}' AND o.merchant_id = h.id AND o.next_attempt_at <= ?1 \
           AND (o.leased_until IS NULL OR o.leased_until < ?1) \
           AND NOT EXISTS (SELECT 1 FROM outbox e \
                           WHERE e.payment_id = o.payment_id AND e.id < o.id \
                             AND e.status = '{pending}') \
         ORDER BY o.next_attempt_at, o.id LIMIT ?4{lock}",
            pending = OutboxStatus::Pending.as_str(),
        )
    };
    // PostgreSQL runs it once per merchant as a lateral join; SQLite, which has none, as a
    // correlated list looked up by id (PostgreSQL would test that list for every row).
    let rows = if postgres {
        format!(
            "CROSS JOIN LATERAL ({}) x",
            first("o.id, o.merchant_id, o.next_attempt_at")
        )
    } else {
        format!("JOIN outbox x ON x.id IN ({})", first("o.id"))
    };
    format!(
        "UPDATE outbox{outer} SET leased_until = ?2 \
         WHERE status = '{pending}' AND next_attempt_at <= ?1 \
           AND (leased_until IS NULL OR leased_until < ?1) \
           AND id IN ( \
             WITH RECURSIVE m(id) AS ( \
               SELECT (SELECT merchant_id FROM outbox{indexed} WHERE status = '{pending}' \
                       ORDER BY merchant_id LIMIT 1) \
               UNION ALL \
               SELECT (SELECT merchant_id FROM outbox{indexed} WHERE status = '{pending}' \
                         AND merchant_id > m.id ORDER BY merchant_id LIMIT 1) \
               FROM m WHERE m.id IS NOT NULL), \
             h(id, held) AS (SELECT m.id, {held} FROM m WHERE m.id IS NOT NULL), \
             c(id, next_attempt_at, place) AS ( \
               SELECT x.id, x.next_attempt_at, h.held + ROW_NUMBER() OVER ( \
                        PARTITION BY x.merchant_id ORDER BY x.next_attempt_at, x.id) \
               FROM h {rows} \
               WHERE h.held < ?4) \
             SELECT c.id FROM c WHERE c.place <= ?4 \
             ORDER BY c.next_attempt_at, c.id LIMIT ?3) \
         RETURNING *",
        pending = OutboxStatus::Pending.as_str(),
    )
}

/// What a node holds, as the JSON object `?5` of [`claim_sql`]: `{"merchant id": count}`.
pub fn held_json(held: &[(i64, i64)]) -> String {
    let fields: Vec<String> = held
        .iter()
        .map(|(merchant_id, count)| format!("\"{merchant_id}\":{count}"))
        .collect();
    format!("{{{}}}", fields.join(","))
}

/// Operations waiting for the wallet since before `?1`, at most `?2`, whose next question is
/// due by `?3` (the operator's listing passes the largest time: every one). `due_first` orders
/// by when each is due (the janitor's order); otherwise oldest first.
pub fn waiting_sql(due_first: bool) -> String {
    format!(
        "\
SELECT payment_id, transaction_no, merchant_no, kind, op_no, since, unanswered_queries FROM (
{union}
) waiting ORDER BY {order} LIMIT ?2",
        union = waiting_union(true),
        order = if due_first {
            "COALESCE(next_query_at, since), since"
        } else {
            "since"
        }
    )
}

/// Whether a database at schema `version` is at `known`, the version this build migrates to
/// (the health check's question: a newer node may have migrated it further since start).
pub fn schema_current(version: Option<i64>, known: i64) -> Result<(), StoreError> {
    match version.unwrap_or(0) {
        v if v == known => Ok(()),
        v => Err(StoreError::Unavailable(format!(
            "the database is at schema version {v}, this tillgate migrates to {known}"
        ))),
    }
}

/// What the store's backlog counts in one statement: pending notifications, those due by `?1`,
/// and every operation waiting for the wallet (the rows [`waiting_sql`] lists, whenever they
/// began and whenever their next question is due).
pub fn backlog_sql() -> String {
    format!(
        "\
SELECT (SELECT COUNT(*) FROM outbox WHERE status = '{pending}') AS notifications_pending,
       (SELECT COUNT(*) FROM outbox WHERE status = '{pending}' AND next_attempt_at <= ?1)
           AS notifications_due,
       (SELECT COUNT(*) FROM (
{union}
       ) waiting) AS unresolved",
        pending = OutboxStatus::Pending.as_str(),
        union = waiting_union(false),
    )
}

/// A subquery that finds a row when the refund `refunds` names was never sent to the wallet:
/// held for an approval that is pending, or was rejected (the refund then ends failed). Such a
/// refund waits for a person, not for the wallet, and the books leave it out.
pub fn never_sent(refunds: &str) -> String {
    format!(
        "SELECT 1 FROM refund_approvals a WHERE a.refund_id = {refunds}.id AND a.state <> '{}'",
        tillgate_core::console::ApprovalState::Approved.as_str()
    )
}

/// The operations waiting for the wallet: payments, refunds and cancels in flight. With
/// `filtered`, only those waiting since before `?1` whose next question is due by `?3`. The
/// states that mean "in flight" are written into the text from the domain's own values, never
/// spelled by hand, and as literals, so that the partial indexes on them apply. What a POS
/// terminal is doing (an open command) is the terminal's to answer, not the wallet's: asking
/// the wallet about a sale it never saw would close a payment the customer is making; nor is a
/// refund held for an approval (`never_sent`) the wallet's.
fn waiting_union(filtered: bool) -> String {
    let filter = |table: &str| {
        if filtered {
            format!(
                " AND {table}.updated_at < ?1 \
                 AND ({table}.next_query_at IS NULL OR {table}.next_query_at <= ?3)"
            )
        } else {
            String::new()
        }
    };
    format!(
        "\
    SELECT p.id AS payment_id, p.transaction_no, p.merchant_no, 'payment' AS kind,
           NULL AS op_no, p.updated_at AS since, p.unanswered_queries, p.next_query_at
    FROM payments p WHERE p.state = '{pending}'{payments}
      AND NOT EXISTS (SELECT 1 FROM terminal_commands t
                      WHERE t.payment_id = p.id AND t.state = '{open}')
    UNION ALL
    SELECT p.id, p.transaction_no, p.merchant_no, 'refund', r.refund_no, r.updated_at,
           r.unanswered_queries, r.next_query_at
    FROM refunds r JOIN payments p ON p.id = r.payment_id
    WHERE r.state = {refunding}{refunds}
      AND NOT EXISTS ({held})
    UNION ALL
    SELECT p.id, p.transaction_no, p.merchant_no, 'cancel', c.cancel_no, c.updated_at,
           c.unanswered_queries, c.next_query_at
    FROM cancels c JOIN payments p ON p.id = c.payment_id
    WHERE c.state = {cancelling}{cancels}
      AND NOT EXISTS (SELECT 1 FROM terminal_commands t
                      WHERE t.cancel_id = c.id AND t.state = '{open}')",
        pending = PaymentState::Pending.as_str(),
        open = tillgate_core::terminal::CommandState::Open.as_str(),
        refunding = RefundState::InProgress.code(),
        held = never_sent("r"),
        cancelling = CancelState::InProgress.code(),
        payments = filter("p"),
        refunds = filter("r"),
        cancels = filter("c"),
    )
}

pub fn unresolved(row: &impl Columns) -> Result<Unresolved, StoreError> {
    let kind = match row.text("kind")?.as_str() {
        "payment" => UnresolvedKind::Payment,
        "refund" => UnresolvedKind::Refund {
            refund_no: row.opt_text("op_no")?.ok_or_else(|| corrupt("refund_no"))?,
        },
        "cancel" => UnresolvedKind::Cancel {
            cancel_no: row.opt_text("op_no")?.ok_or_else(|| corrupt("cancel_no"))?,
        },
        _ => return Err(corrupt("unresolved kind")),
    };
    Ok(Unresolved {
        payment_id: row.int("payment_id")?,
        transaction_no: row.text("transaction_no")?,
        merchant_no: row.text("merchant_no")?,
        kind,
        since: time(row.int("since")?)?,
        unanswered_queries: row.int("unanswered_queries")?,
    })
}

/// The statement that defers the next question about `op` to `?1` (`?2` the payment id, `?3`
/// the refund or cancel number), and the value of `?3` when the statement has one.
pub fn defer_query(op: &Unresolved) -> (&'static str, Option<&str>) {
    match &op.kind {
        UnresolvedKind::Payment => (
            "UPDATE payments SET next_query_at = ?1, \
             unanswered_queries = unanswered_queries + 1 \
             WHERE id = ?2",
            None,
        ),
        UnresolvedKind::Refund { refund_no } => (
            "UPDATE refunds SET next_query_at = ?1, \
             unanswered_queries = unanswered_queries + 1 \
             WHERE payment_id = ?2 AND refund_no = ?3",
            Some(refund_no),
        ),
        UnresolvedKind::Cancel { cancel_no } => (
            "UPDATE cancels SET next_query_at = ?1, \
             unanswered_queries = unanswered_queries + 1 \
             WHERE payment_id = ?2 AND cancel_no = ?3",
            Some(cancel_no),
        ),
    }
}

/// Where a kind of credential (store token, app secret, terminal secret) is kept, for both
/// backends (`?N` placeholders; PostgreSQL rewrites them to `$N`).
pub struct CredentialTable {
    /// Inserts (merchant_id, key, sealed[, created_at]) unless the key exists.
    pub insert: &'static str,
    /// Reads (merchant_id, sealed) of an existing row by (?1 merchant_id, ?2 key).
    pub existing: &'static str,
    /// Whether the key is unique across merchants (then another merchant's key is a conflict).
    pub global_key: Option<Conflict>,
    /// Reads (key, sealed) of the merchant's first credential of the kind by (?1 merchant_id).
    pub first: &'static str,
}

pub const STORES: CredentialTable = CredentialTable {
    insert: "INSERT INTO stores (merchant_id, store_no, token_sealed) VALUES (?1, ?2, ?3) \
             ON CONFLICT (merchant_id, store_no) DO NOTHING",
    existing:
        "SELECT merchant_id, token_sealed FROM stores WHERE merchant_id = ?1 AND store_no = ?2",
    global_key: None,
    first: "SELECT store_no, token_sealed FROM stores WHERE merchant_id = ?1 ORDER BY id LIMIT 1",
};

pub const APPS: CredentialTable = CredentialTable {
    insert: "INSERT INTO apps (merchant_id, app_id, secret_sealed, created_at) \
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT (app_id) DO NOTHING",
    existing: "SELECT merchant_id, secret_sealed FROM apps WHERE ?1 IS NOT NULL AND app_id = ?2",
    global_key: Some(Conflict::AppOfAnotherMerchant),
    first: "SELECT app_id, secret_sealed FROM apps WHERE merchant_id = ?1 ORDER BY id LIMIT 1",
};

pub const TERMINALS: CredentialTable = CredentialTable {
    insert: "INSERT INTO terminals (merchant_id, tid, secret_sealed, created_at) \
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT (tid) DO NOTHING",
    existing: "SELECT merchant_id, secret_sealed FROM terminals WHERE ?1 IS NOT NULL AND tid = ?2",
    global_key: Some(Conflict::TerminalOfAnotherMerchant),
    first: "SELECT tid, secret_sealed FROM terminals WHERE merchant_id = ?1 ORDER BY id LIMIT 1",
};

/// Creates a merchant (?1 merchant_no, ?2 zone, ?3 sandbox, ?4 created_at) unless its number
/// exists.
pub const INSERT_MERCHANT: &str =
    "INSERT INTO merchants (merchant_no, zone, sandbox, created_at) VALUES (?1, ?2, ?3, ?4) \
     ON CONFLICT (merchant_no) DO NOTHING";

/// Sets a merchant's notification schedule (?1) by its number (?2).
pub const SET_SCHEDULE_BY_NO: &str =
    "UPDATE merchants SET notify_schedule = ?1 WHERE merchant_no = ?2";

/// Sets a merchant's time zone (?1) by its id (?2).
pub const SET_ZONE: &str = "UPDATE merchants SET zone = ?1 WHERE id = ?2";

/// The master key's check value.
pub const KEY_CHECK: &str = "SELECT sealed FROM key_check WHERE id = 1";

/// Keeps a check value (?1 sealed, ?2 created_at) unless the database holds one.
pub const RECORD_KEY_CHECK: &str =
    "INSERT INTO key_check (id, sealed, created_at) VALUES (1, ?1, ?2) \
     ON CONFLICT (id) DO NOTHING";

/// The oldest store with its merchant.
pub const FIRST_STORE_ROW: &str =
    "SELECT m.*, s.store_no, s.token_sealed, s.default_currency FROM stores s \
     JOIN merchants m ON m.id = s.merchant_id ORDER BY s.id LIMIT 1";

/// A stored dialect name.
fn dialect(name: &str) -> Result<tillgate_core::Dialect, StoreError> {
    tillgate_core::Dialect::parse(name)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown dialect {name:?}")))
}

/// A stored notification topic.
fn topic(name: &str) -> Result<tillgate_core::Topic, StoreError> {
    tillgate_core::Topic::parse(name)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown notification topic {name:?}")))
}

/// Claims a signed request for the exact-replay guard (`?1` merchant, `?2` digest, `?3` now,
/// `?4` the window's start): inserts it, or takes over a sighting older than the window. One
/// row changed means the request is fresh.
pub const CLAIM_REPLAY: &str = "\
INSERT INTO replays (merchant_id, digest, first_at) VALUES (?1, ?2, ?3)
ON CONFLICT (merchant_id, digest) DO UPDATE
    SET first_at = excluded.first_at, status = NULL, content_type = NULL, body = NULL
    WHERE replays.first_at < ?4";

/// Records the answer of a claimed request (`?1` status, `?2` content type, `?3` body, `?4`
/// merchant, `?5` digest, `?6` the claim's time: a later claim's row is not overwritten).
pub const ANSWER_REPLAY: &str = "\
UPDATE replays SET status = ?1, content_type = ?2, body = ?3
WHERE merchant_id = ?4 AND digest = ?5 AND first_at = ?6";

/// Gives up the claim of a request (`?1` merchant, `?2` digest, `?3` the claim's time) that
/// was not answered, so that its retry acts.
pub const RELEASE_REPLAY: &str = "\
DELETE FROM replays WHERE merchant_id = ?1 AND digest = ?2 AND first_at = ?3 AND status IS NULL";

/// A remembered request's answer from its columns: all set, or none (not answered yet).
pub fn stored_answer(
    status: Option<i64>,
    content_type: Option<String>,
    body: Option<Vec<u8>>,
) -> Result<Option<tillgate_core::replay::StoredAnswer>, StoreError> {
    match (status, content_type, body) {
        (Some(status), Some(content_type), Some(body)) => {
            Ok(Some(tillgate_core::replay::StoredAnswer {
                status: u16::try_from(status).map_err(|_| corrupt("replay status"))?,
                content_type,
                body,
            }))
        }
        (None, None, None) => Ok(None),
        _ => Err(corrupt("a replay answer in part")),
    }
}

/// Where a kind of credential keeps its secret: (table, sealed column, key column).
pub fn secret_place(kind: CredentialKind) -> (&'static str, &'static str, &'static str) {
    match kind {
        CredentialKind::Store => ("stores", "token_sealed", "store_no"),
        CredentialKind::App => ("apps", "secret_sealed", "app_id"),
        CredentialKind::Terminal => ("terminals", "secret_sealed", "tid"),
    }
}

/// The two statements of a rotation (`?N` placeholders): keep the secret in force as the
/// previous one (?1 kind, ?2 previous key, ?3 until, ?4 merchant, ?5 key), then put the new
/// one in its place (?1 new sealed, ?2 merchant, ?3 key).
pub fn rotation_sql(kind: CredentialKind) -> (String, String) {
    let (table, column, key) = secret_place(kind);
    (
        format!(
            "INSERT INTO credential_previous (kind, key, sealed, until_at) \
             SELECT ?1, ?2, {column}, ?3 FROM {table} WHERE merchant_id = ?4 AND {key} = ?5 \
             ON CONFLICT (kind, key) DO UPDATE SET sealed = excluded.sealed, \
             until_at = excluded.until_at"
        ),
        format!("UPDATE {table} SET {column} = ?1 WHERE merchant_id = ?2 AND {key} = ?3"),
    )
}

pub const PREVIOUS_SECRET: &str =
    "SELECT sealed, until_at FROM credential_previous WHERE kind = ?1 AND key = ?2";
