//! `tillgate terminal`: a POS terminal simulator that speaks the terminal protocol of the hub
//! (see `tillgate_server::hub`), prints each command and its progress like a POS screen, and
//! completes it: a sale is approved unless its amount ends in 51 (declined, as the sandbox
//! wallet would), reversals and cancels succeed.

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::time::Duration;
use tillgate_domain::Clock;
use tillgate_server::hub::{handshake_signature, Down, Up};
use tokio_tungstenite::tungstenite::Message;

#[derive(clap::Args)]
pub struct Args {
    /// The gateway, e.g. http://127.0.0.1:8080
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: String,
    /// The terminal's id (tid), as the gateway knows it.
    #[arg(long)]
    tid: String,
    /// The terminal's secret key.
    #[arg(long, env = "TILLGATE_TERMINAL_SECRET", hide_env_values = true)]
    secret: String,
    /// Milliseconds between the progress steps shown on the screen.
    #[arg(long, default_value_t = 300)]
    step_ms: u64,
}

/// One line of the terminal's screen; a closed standard output ends the simulator quietly.
fn screen(tid: &str, line: &str) {
    if let Err(e) = crate::output::emit(&format!("[{tid}] {line}")) {
        tracing::warn!(error = %e, "cannot show the screen");
    }
}

/// The result the simulated terminal reaches for a command.
fn decide(command: &tillgate_core::terminal::TerminalCommand) -> (&'static str, &'static str) {
    use tillgate_core::terminal::CommandKind;
    match command.kind {
        CommandKind::Sale if command.amount_minor % 100 == 51 => ("declined", "DECLINED"),
        CommandKind::Sale => ("approved", "APPROVED"),
        CommandKind::Reversal => ("approved", "REVERSED"),
        CommandKind::Cancel => ("approved", "CANCELLED"),
    }
}

fn amount(minor: i64, currency: &str) -> String {
    let exponent = tillgate_domain::Currency::from_code(currency).map_or(2, |c| c.exponent());
    match tillgate_domain::Currency::from_code(currency)
        .and_then(|c| tillgate_domain::Money::from_minor(minor, c))
    {
        Some(m) => format!("{} {currency}", m.to_decimal_string()),
        None => format!("{minor} (minor units, exponent {exponent}) {currency}"),
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let ws_url = format!(
        "{}/terminal/v1/ws",
        args.server
            .trim_end_matches('/')
            .replacen("http://", "ws://", 1)
            .replacen("https://", "wss://", 1)
    );
    let (socket, _) = tokio_tungstenite::connect_async(&ws_url)
        .await
        .with_context(|| format!("cannot connect to {ws_url}"))?;
    let (mut sink, mut stream) = socket.split();
    let timestamp = tillgate_domain::SystemClock.now().timestamp();
    let nonce = tillgate_core::SecretBox::generate_key_hex().expose()[..24].to_owned();
    let hello = Up::Hello {
        tid: args.tid.clone(),
        timestamp,
        signature: handshake_signature(&args.secret, &args.tid, timestamp, &nonce),
        nonce,
    };
    sink.send(Message::Text(serde_json::to_string(&hello)?.into()))
        .await?;
    // Results already sent, by command id, so a command delivered again is answered at once.
    let mut finished: HashMap<String, (String, String)> = HashMap::new();
    while let Some(message) = stream.next().await {
        let text = match message? {
            Message::Text(t) => t.to_string(),
            Message::Close(_) => break,
            _ => continue,
        };
        let Ok(down) = serde_json::from_str::<Down>(&text) else {
            continue;
        };
        match down {
            Down::Welcome { tid, .. } => screen(&tid, &format!("connected to {}", args.server)),
            Down::Error { message } => {
                screen(&args.tid, &format!("refused: {message}"));
                anyhow::bail!("the gateway refused the terminal: {message}");
            }
            Down::Done { id } => screen(&args.tid, &format!("└ done ({id})")),
            Down::Command { command } => {
                let id = command.id.clone();
                let send =
                    |up: &Up| Message::Text(serde_json::to_string(up).unwrap_or_default().into());
                if let Some((outcome, shown)) = finished.get(&id) {
                    screen(&args.tid, &format!("│ {id} again: {shown}"));
                    let up = Up::Result {
                        id: id.clone(),
                        outcome: outcome.clone(),
                        message: None,
                    };
                    sink.send(send(&up)).await?;
                    continue;
                }
                screen(
                    &args.tid,
                    &format!(
                        "┌ {} {}  transaction {}",
                        command.kind.as_str().to_uppercase(),
                        amount(command.amount_minor, &command.currency),
                        command.transaction_no
                    ),
                );
                sink.send(send(&Up::Ack { id: id.clone() })).await?;
                for stage in ["received", "shown to customer", "processing"] {
                    tokio::time::sleep(Duration::from_millis(args.step_ms)).await;
                    screen(&args.tid, &format!("│ {stage}"));
                    let up = Up::Progress {
                        id: id.clone(),
                        stage: stage.to_owned(),
                    };
                    sink.send(send(&up)).await?;
                }
                let (outcome, shown) = decide(&command);
                screen(&args.tid, &format!("│ {shown}"));
                finished.insert(id.clone(), (outcome.to_owned(), shown.to_owned()));
                let up = Up::Result {
                    id,
                    outcome: outcome.to_owned(),
                    message: None,
                };
                sink.send(send(&up)).await?;
            }
        }
    }
    screen(&args.tid, "disconnected");
    Ok(())
}
