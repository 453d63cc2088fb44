//! Sales on a POS terminal, and the events the terminal hub reports: progress for the
//! payment's timeline, and final results, applied through [`settle`](super::settle).

use super::*;
use crate::ids::new_number;
use crate::terminal::{
    CommandKind, CommandRecord, NewCommand, TerminalCommand, TerminalEvent, TerminalReport,
};
use tillgate_domain::PayRejected;
use tokio::sync::mpsc;

impl Lifecycle {
    /// A sale on a POS terminal: the transaction is added (the merchant's reference replays),
    /// the terminal takes the customer's payment, and its result is applied. Answers once the
    /// terminal finished, or after `wait` with the payment still pending (its result is
    /// applied when it comes).
    pub async fn terminal_sale(
        &self,
        merchant: &MerchantRecord,
        tid: &str,
        req: AddRequest,
        wait: std::time::Duration,
    ) -> Result<Outcome<PaymentRecord>, LifecycleError> {
        let hub = self.hub.clone().ok_or(LifecycleError::TerminalOffline)?;
        let added = self.add(merchant, req).await?;
        if added.replayed && added.value.payment.state() != PaymentState::Created {
            return Ok(added);
        }
        if !hub.is_online(tid).await? {
            return Err(LifecycleError::TerminalOffline);
        }
        let now = self.now();
        let p = &added.value;
        let command = TerminalCommand {
            id: new_number(now),
            kind: CommandKind::Sale,
            transaction_no: p.transaction_no.clone(),
            amount_minor: p.payment.amount().minor(),
            currency: p.payment.amount().currency().code().to_owned(),
            description: p.description.clone(),
        };
        let payment = self.submit_to_terminal(p, tid, &command).await?;
        self.run_on_terminal(&hub, tid, &command, wait).await?;
        let value = self.payment_of(payment.id).await.unwrap_or(payment);
        Ok(Outcome::new(value))
    }

    /// Marks an added payment submitted to terminal `tid` and writes the sale command with it;
    /// an expired one is closed instead, and nothing is sent.
    async fn submit_to_terminal(
        &self,
        p: &PaymentRecord,
        tid: &str,
        command: &TerminalCommand,
    ) -> Result<PaymentRecord, LifecycleError> {
        let now = self.now();
        let fingerprint = format!("terminal:{tid}");
        let (tid_owned, sent, fp) = (tid.to_owned(), command.clone(), fingerprint.clone());
        let submitted = self
            .store
            .mutate_from(
                p,
                Box::new(move |p| {
                    // As in `pay`: an added payment that waited past its expiry is closed.
                    if now > p.expires_at && p.payment.expire() {
                        return Ok(Writes::at(now).event("payment.expired", String::new()));
                    }
                    p.payment.submit().map_err(Rejection::Pay)?;
                    p.pay_fingerprint = Some(fp.clone());
                    p.vendor = Some("terminal".into());
                    let mut w = Writes::at(now).event("terminal.sale.sent", tid_owned.clone());
                    w.command = Some(NewCommand {
                        command: sent.clone(),
                        tid: tid_owned.clone(),
                    });
                    Ok(w)
                }),
            )
            .await?;
        match submitted {
            Mutated::Done { payment, .. } if payment.payment.state() == PaymentState::Closed => {
                Err(LifecycleError::Rejected(Rejection::Pay(
                    PayRejected::Closed,
                )))
            }
            Mutated::Done { payment, .. } => Ok(payment),
            // The same sale already runs on this terminal.
            Mutated::Rejected(Rejection::Pay(PayRejected::AlreadySubmitted), p)
                if p.pay_fingerprint.as_deref() == Some(&fingerprint) =>
            {
                Err(LifecycleError::InProgress)
            }
            Mutated::Rejected(r, _) => Err(LifecycleError::Rejected(r)),
        }
    }

    /// Applies what the terminal hub reports until its sender goes away: progress lines in the
    /// payment's timeline, and results applied with their payment change. Each event is
    /// applied on a task of its own, so one slow write holds up no other terminal (the hub
    /// waits for each of one terminal's reports in turn, so they keep their order).
    pub async fn apply_terminal_events(self: Arc<Self>, mut events: mpsc::Receiver<TerminalEvent>) {
        while let Some(TerminalEvent { report, applied }) = events.recv().await {
            let app = self.clone();
            tokio::spawn(async move {
                let done = match report {
                    TerminalReport::Progress { command, stage } => app
                        .terminal_progress(&command, &stage)
                        .await
                        .map_err(LifecycleError::from),
                    TerminalReport::Result { command_id, result } => {
                        app.apply_terminal_result(&command_id, result).await
                    }
                };
                let _ = applied.send(done);
            });
        }
    }

    /// Records a terminal's progress on a command in its payment's timeline.
    pub async fn terminal_progress(
        &self,
        record: &CommandRecord,
        stage: &str,
    ) -> Result<(), StoreError> {
        let detail = format!("{} {stage}", record.command.kind.as_str());
        self.store
            .append_event(record.payment_id, self.now(), "terminal.progress", &detail)
            .await
    }
}
