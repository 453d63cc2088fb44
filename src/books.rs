//! `tillgate report settlement`, `tillgate reconcile`, `tillgate cases` and `tillgate export`:
//! the books from the command line (the admin API shares their JSON).

use crate::output::{self, emit, emit_json, Column, ReportFormat};
use crate::Common;
use anyhow::Context;
use clap::{Args, Subcommand};
use std::io::{IsTerminal, Write};
use tillgate_core::books::{self, BookKind, BookQuery};
use tillgate_core::Secret;
use tillgate_domain::{Clock, MerchantZone, SystemClock};
use tillgate_server::books::{self as server_books, BooksError};

#[derive(Subcommand)]
pub enum ReportCommand {
    /// A business day's settlement (in each merchant's time zone): counts and sums by
    /// currency of payments, refunds, cancels and reversals, the fees of the merchant's fee
    /// plan, and the net to settle.
    Settlement {
        #[command(flatten)]
        common: Common,
        /// The business day, YYYY-MM-DD.
        #[arg(long)]
        date: String,
        /// One merchant (default: every merchant).
        #[arg(long)]
        merchant_no: Option<String>,
        /// One store of the merchant.
        #[arg(long, requires = "merchant_no")]
        store_no: Option<String>,
        /// table, csv or json.
        #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
        format: ReportFormat,
    },
}

#[derive(Args)]
pub struct ReconcileArgs {
    #[command(flatten)]
    common: Common,
    /// The wallet's statement day (UTC), YYYY-MM-DD.
    #[arg(long)]
    date: String,
    /// The default wallet's base URL (as `serve --channel`; else the config file's).
    #[arg(long, env = "TILLGATE_CHANNEL")]
    channel: Option<String>,
    /// The default wallet's HMAC key, hex.
    #[arg(long, env = "TILLGATE_CHANNEL_KEY", hide_env_values = true)]
    channel_key: Option<String>,
}

#[derive(Subcommand)]
pub enum CasesCommand {
    /// Cases opened by reconciliations, oldest first.
    List {
        #[command(flatten)]
        common: Common,
        /// open (default), closed or all.
        #[arg(long, default_value = "open")]
        status: String,
        /// Only those of this statement day (YYYY-MM-DD).
        #[arg(long)]
        date: Option<String>,
        /// The most cases listed.
        #[arg(long, default_value_t = 1000)]
        limit: i64,
        /// json (both sides of each) or table (one line each).
        #[arg(long, value_enum, default_value_t = output::Format::Table)]
        format: output::Format,
    },
    /// One case: what the gateway and the wallet each say, and the transaction's timeline.
    Show {
        #[command(flatten)]
        common: Common,
        /// The case's id (`cases list`).
        id: i64,
    },
    /// Closes a case with a note saying what was done about it.
    Close {
        #[command(flatten)]
        common: Common,
        /// The case's id (`cases list`).
        id: i64,
        /// Why it is closed (required).
        #[arg(long)]
        note: String,
    },
}

/// What an export lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportKind {
    /// Payments submitted to the wallet (paid, declined or pending), by when they were paid.
    Transactions,
    Refunds,
    Cancels,
    /// All three, one after the other.
    All,
}

/// How an export writes its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// A heading, then one line per operation.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

#[derive(Args)]
pub struct ExportArgs {
    #[command(flatten)]
    common: Common,
    /// transactions, refunds, cancels or all.
    #[arg(long, value_enum, default_value_t = ExportKind::Transactions)]
    kind: ExportKind,
    /// The first day, YYYY-MM-DD (in the merchant's time zone with --merchant-no, else UTC).
    #[arg(long)]
    from: String,
    /// The last day, included (default: the first).
    #[arg(long)]
    to: Option<String>,
    /// One merchant (default: every merchant).
    #[arg(long)]
    merchant_no: Option<String>,
    /// One store of the merchant.
    #[arg(long, requires = "merchant_no")]
    store_no: Option<String>,
    /// csv or jsonl.
    #[arg(long, value_enum, default_value_t = ExportFormat::Csv)]
    format: ExportFormat,
}

fn books_error(e: BooksError) -> anyhow::Error {
    anyhow::anyhow!(e.to_string())
}

const SETTLEMENT_COLUMNS: [Column; 9] = [
    Column {
        heading: "MERCHANT",
        cell: |r| output::text(&r["merchantNo"]),
    },
    Column {
        heading: "CURRENCY",
        cell: |r| output::text(&r["currency"]),
    },
    Column {
        heading: "PAYMENTS",
        cell: |r| tally(&r["payments"]),
    },
    Column {
        heading: "REFUNDS",
        cell: |r| tally(&r["refunds"]),
    },
    Column {
        heading: "REVERSALS",
        cell: |r| tally(&r["reversals"]),
    },
    Column {
        heading: "CANCELS",
        cell: |r| output::text(&r["cancels"]["count"]),
    },
    Column {
        heading: "FEES",
        cell: |r| output::text(&r["fees"]),
    },
    Column {
        heading: "NET",
        cell: |r| output::text(&r["net"]),
    },
    Column {
        heading: "ZONE",
        cell: |r| output::text(&r["timezone"]),
    },
];

fn tally(t: &serde_json::Value) -> String {
    format!(
        "{} × {}",
        output::text(&t["count"]),
        output::text(&t["sum"])
    )
}

pub async fn report(command: ReportCommand) -> anyhow::Result<()> {
    let ReportCommand::Settlement {
        common,
        date,
        merchant_no,
        store_no,
        format,
    } = command;
    books::parse_day(&date).map_err(|e| anyhow::anyhow!("--date: {e}"))?;
    let config = common.config()?;
    let store = crate::open_for_command(&config).await?;
    let listing = server_books::settlements(
        store.as_ref(),
        &date,
        merchant_no.as_deref(),
        store_no.as_deref(),
    )
    .await;
    store.close().await;
    let listing = listing.map_err(books_error)?;
    match format {
        ReportFormat::Json => emit_json(&listing),
        ReportFormat::Csv => {
            let mut lines = vec![server_books::SETTLEMENT_CSV_HEADING.to_owned()];
            lines.extend(server_books::settlement_csv(&listing));
            emit(&lines.join("\n"))
        }
        ReportFormat::Table => {
            let mut rows = Vec::new();
            for s in listing["settlements"].as_array().into_iter().flatten() {
                for c in s["currencies"].as_array().into_iter().flatten() {
                    let mut row = c.clone();
                    row["merchantNo"] = s["merchantNo"].clone();
                    row["timezone"] = s["timezone"].clone();
                    rows.push(row);
                }
            }
            emit(&format!(
                "settlement of {date}\n{}",
                output::table(&rows, &SETTLEMENT_COLUMNS, "nothing was settled that day")
            ))
        }
    }
}

pub async fn reconcile(args: ReconcileArgs) -> anyhow::Result<()> {
    let date = books::parse_day(&args.date).map_err(|e| anyhow::anyhow!("--date: {e}"))?;
    let mut config = args.common.config()?;
    if let Some(v) = args.channel {
        config.channel.wallet = v;
    }
    if let Some(v) = args.channel_key {
        config.channel.key = Some(Secret::new(v));
    }
    let wallets = server_books::wallets(&config)?;
    if wallets.scopes.is_empty() {
        anyhow::bail!(
            "nothing to reconcile: {}",
            wallets.without_statement.join("; ")
        );
    }
    let store = crate::open_for_command(&config).await?;
    let node = format!("cli-{}", std::process::id());
    let result = server_books::reconcile(
        store.as_ref(),
        &wallets,
        date,
        &node,
        SystemClock.now(),
        true,
    )
    .await;
    store.close().await;
    emit_json(&result)?;
    let failed = result["reconciliations"]
        .as_array()
        .is_some_and(|r| r.iter().any(|s| s["status"] == "failed"));
    if failed {
        anyhow::bail!("a wallet's reconciliation failed (see \"error\" above)");
    }
    Ok(())
}

const CASE_COLUMNS: [Column; 7] = [
    Column {
        heading: "ID",
        cell: |c| output::text(&c["id"]),
    },
    Column {
        heading: "DAY",
        cell: |c| output::text(&c["day"]),
    },
    Column {
        heading: "FINDING",
        cell: |c| output::text(&c["finding"]),
    },
    Column {
        heading: "OPERATION",
        cell: |c| output::text(&c["operation"]),
    },
    Column {
        heading: "NUMBER",
        cell: |c| output::text(&c["number"]),
    },
    Column {
        heading: "WALLET",
        cell: |c| output::text(&c["scope"]),
    },
    Column {
        heading: "STATUS",
        cell: |c| output::text(&c["status"]),
    },
];

pub async fn cases(command: CasesCommand) -> anyhow::Result<()> {
    match command {
        CasesCommand::List {
            common,
            status,
            date,
            limit,
            format,
        } => {
            let config = common.config()?;
            let store = crate::open_for_command(&config).await?;
            let listing =
                server_books::case_listing(store.as_ref(), Some(&status), date.as_deref(), limit)
                    .await;
            store.close().await;
            let listing = listing.map_err(books_error)?;
            match format {
                output::Format::Json => emit_json(&listing),
                output::Format::Table => emit(&output::table(
                    listing["cases"].as_array().map_or(&[][..], Vec::as_slice),
                    &CASE_COLUMNS,
                    "no cases",
                )),
            }
        }
        CasesCommand::Show { common, id } => {
            let config = common.config()?;
            let store = crate::open_for_command(&config).await?;
            let case = server_books::case_detail(store.as_ref(), id).await;
            store.close().await;
            emit_json(&case.map_err(books_error)?)
        }
        CasesCommand::Close { common, id, note } => {
            let config = common.config()?;
            let store = crate::open_for_command(&config).await?;
            let case = server_books::close_case(store.as_ref(), id, &note, SystemClock.now()).await;
            store.close().await;
            emit_json(&case.map_err(books_error)?)
        }
    }
}

/// Writes every operation of the range to standard output, page by page (keyset pagination:
/// memory stays that of one page of 1000 whatever the range holds), with a progress bar on
/// standard error when it is a terminal.
pub async fn export(args: ExportArgs) -> anyhow::Result<()> {
    let from = books::parse_day(&args.from).map_err(|e| anyhow::anyhow!("--from: {e}"))?;
    let to = match &args.to {
        Some(t) => books::parse_day(t).map_err(|e| anyhow::anyhow!("--to: {e}"))?,
        None => from,
    };
    if to < from {
        anyhow::bail!("--to ({to}) is before --from ({from})");
    }
    let config = args.common.config()?;
    let store = crate::open_for_command(&config).await?;
    let written = export_to(&args, store.as_ref(), from, to).await;
    store.close().await;
    written
}

async fn export_to(
    args: &ExportArgs,
    store: &dyn tillgate_core::Store,
    from: chrono::NaiveDate,
    to: chrono::NaiveDate,
) -> anyhow::Result<()> {
    let (merchant_id, zone) = match &args.merchant_no {
        Some(no) => {
            let m = store
                .merchant(no)
                .await?
                .with_context(|| format!("there is no merchant {no}"))?;
            (Some(m.id), m.zone)
        }
        None => (None, MerchantZone::utc()),
    };
    let (start, _) = zone.day_bounds(from);
    let (_, end) = zone.day_bounds(to);
    let kinds: &[BookKind] = match args.kind {
        ExportKind::Transactions => &[BookKind::Payment],
        ExportKind::Refunds => &[BookKind::Refund],
        ExportKind::Cancels => &[BookKind::Cancel],
        ExportKind::All => &BookKind::ALL,
    };
    let query = |kind| {
        let mut q = BookQuery::new(kind, start, end);
        q.merchant_id = merchant_id;
        q.store_no = args.store_no.clone();
        q
    };
    let bar = if std::io::stderr().is_terminal() {
        let mut total = 0;
        for kind in kinds {
            total += store.count_book_entries(&query(*kind)).await?;
        }
        let bar = indicatif::ProgressBar::new(u64::try_from(total).unwrap_or(0));
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} rows {per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(bar)
    } else {
        None
    };
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let result = async {
        if args.format == ExportFormat::Csv {
            writeln!(out, "{}", books::CSV_HEADING)?;
        }
        for kind in kinds {
            let mut q = query(*kind);
            loop {
                let page = store.book_entries(&q).await?;
                for e in &page {
                    match args.format {
                        ExportFormat::Csv => writeln!(out, "{}", books::entry_csv(e))?,
                        ExportFormat::Jsonl => writeln!(out, "{}", books::entry_json(e))?,
                    }
                }
                if let Some(bar) = &bar {
                    bar.inc(page.len() as u64);
                }
                if !q.next_after(&page) {
                    break;
                }
            }
        }
        out.flush()?;
        anyhow::Ok(())
    }
    .await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    match result {
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            // The reader went away (`| head`): what was wanted was written.
            std::process::exit(0)
        }
        other => other,
    }
}
