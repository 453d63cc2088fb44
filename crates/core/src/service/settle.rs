//! Every answer about money in flight, recorded in one place: the wallet's immediate answer,
//! its late callbacks, what the janitor learnt by asking, and a POS terminal's result.
//!
//! An unknown answer changes nothing. A settlement of a refund or cancel requires it to be
//! still in progress (`Guard`), so a duplicate or late answer never settles twice; it then
//! reports the row as it stands.

use super::*;
use crate::channel::{ChannelOp, ChannelReply, QueryTarget};
use crate::snapshot::Topic;
use crate::terminal::{CommandKind, CommandOutcome, CommandRecord, CommandState, TerminalResult};
use tillgate_domain::{CancelState, ChannelOutcome, RefundState};

/// An answer for something already settled is not an error when resolving.
fn ignore_replay(e: LifecycleError) -> Result<(), LifecycleError> {
    match e {
        LifecycleError::Rejected(Rejection::Replay) => Ok(()),
        other => Err(other),
    }
}

impl Lifecycle {
    /// Records the wallet's (or a terminal's) answer to a submitted payment; an unknown answer
    /// changes nothing. `finish` is the terminal command whose result this is, finished in the
    /// same change. The second value says whether the answer was recorded now (false: the
    /// payment was settled before).
    pub(super) async fn settle_payment(
        &self,
        payment: PaymentRecord,
        reply: ChannelReply,
        finish: Option<FinishCommand>,
    ) -> Result<(PaymentRecord, bool), LifecycleError> {
        if reply.outcome == ChannelOutcome::Unknown {
            return Ok((payment, false));
        }
        let now = self.now();
        let first_delay = self.config.notify_first_delay;
        let settled = self
            .store
            .mutate_from(
                &payment,
                Box::new(move |p| {
                    if !p.payment.settle_submission(reply.outcome, now) {
                        return Err(Rejection::Replay);
                    }
                    let approved = reply.outcome == ChannelOutcome::Approved;
                    let kind = if approved {
                        Topic::PaymentPaid.as_str()
                    } else {
                        "payment.declined"
                    };
                    let detail = reply.message.clone().unwrap_or_default();
                    let mut w = Writes::at(now).event(kind, detail);
                    w.finish_command = finish.clone();
                    // Merchants are told of payments that succeeded (the others they learn
                    // from the answer to their own request).
                    if approved {
                        let url = p.notify_url.clone();
                        let snapshot = Snapshot::of(Topic::PaymentPaid, p, now);
                        enqueue(&mut w, p, url.as_deref(), snapshot, first_delay);
                    }
                    Ok(w)
                }),
            )
            .await?;
        self.outbox_wake.notify_one();
        Ok(match settled {
            Mutated::Done { payment, .. } => (payment, true),
            Mutated::Rejected(_, p) => (p, false),
        })
    }

    /// Records the wallet's answer to a refund; an unknown answer leaves it in progress.
    pub(super) async fn settle_refund(
        &self,
        payment: PaymentRecord,
        refund: RefundRecord,
        reply: ChannelReply,
    ) -> Result<(PaymentRecord, RefundRecord), LifecycleError> {
        self.settle_refund_noted(payment, refund, reply, None).await
    }

    /// `settle_refund`, with an event of kind `note` (detail: the reply's message) written
    /// before the outcome's: why a refund the wallet never saw ended (a rejected approval).
    pub(super) async fn settle_refund_noted(
        &self,
        payment: PaymentRecord,
        refund: RefundRecord,
        reply: ChannelReply,
        note: Option<&'static str>,
    ) -> Result<(PaymentRecord, RefundRecord), LifecycleError> {
        if reply.outcome == ChannelOutcome::Unknown {
            return Ok((payment, refund));
        }
        let now = self.now();
        let first_delay = self.config.notify_first_delay;
        let decided = refund.clone();
        let settled = self
            .store
            .mutate_from(
                &payment,
                Box::new(move |p| {
                    let refund = &decided;
                    if !p.payment.settle_refund(refund.amount, reply.outcome) {
                        return Err(Rejection::Replay);
                    }
                    let state = RefundState::after(reply.outcome);
                    let topic = if state == RefundState::Succeeded {
                        Topic::RefundSucceeded
                    } else {
                        Topic::RefundFailed
                    };
                    let amount = refund.amount.minor().to_string();
                    let mut w = Writes::at(now);
                    if let Some(kind) = note {
                        w = w.event(kind, reply.message.clone().unwrap_or_default());
                    }
                    let mut w = w.event(topic.as_str(), amount);
                    w.refund = Some(RefundWrite::SetState {
                        refund_id: refund.id,
                        state,
                    });
                    // A second answer for the same refund (a duplicate callback, the janitor
                    // and a callback at once) must not settle it twice.
                    w.guard = Some(Guard::RefundInProgress(refund.id));
                    let mut done = refund.clone();
                    done.state = state;
                    done.updated_at = now;
                    let snapshot = Snapshot::of(topic, p, now).with_refund(&done);
                    enqueue(
                        &mut w,
                        p,
                        refund.notify_url.as_deref(),
                        snapshot,
                        first_delay,
                    );
                    Ok(w)
                }),
            )
            .await?;
        self.outbox_wake.notify_one();
        let (payment, row) = settled_row(settled, |refund, _| refund)?;
        let refund = match row {
            Some(row) => row,
            // Another answer for this refund came first: report the refund as it stands.
            None => self
                .store
                .refund_by_no(payment.merchant_id, &refund.refund_no)
                .await?
                .unwrap_or(refund),
        };
        Ok((payment, refund))
    }

    /// Records the wallet's (or the terminal's) answer to a cancel; an unknown answer leaves it
    /// in progress. `finish` is the terminal command whose result this is, finished in the
    /// same change. The third value says whether the answer was recorded now.
    pub(super) async fn settle_cancel(
        &self,
        payment: PaymentRecord,
        cancel: CancelRecord,
        reply: ChannelReply,
        finish: Option<FinishCommand>,
    ) -> Result<(PaymentRecord, CancelRecord, bool), LifecycleError> {
        if reply.outcome == ChannelOutcome::Unknown {
            return Ok((payment, cancel, false));
        }
        let now = self.now();
        let first_delay = self.config.notify_first_delay;
        let decided = cancel.clone();
        let settled = self
            .store
            .mutate_from(
                &payment,
                Box::new(move |p| {
                    let cancel = &decided;
                    if !p.payment.settle_cancel(reply.outcome) {
                        return Err(Rejection::Replay);
                    }
                    let state = CancelState::after(reply.outcome);
                    let succeeded = state == CancelState::Succeeded;
                    let kind = if succeeded {
                        Topic::CancelSucceeded.as_str()
                    } else {
                        "cancel.failed"
                    };
                    let detail = reply.message.clone().unwrap_or_default();
                    let mut w = Writes::at(now).event(kind, detail);
                    w.cancel = Some(CancelWrite::SetState {
                        cancel_id: cancel.id,
                        state,
                    });
                    w.guard = Some(Guard::CancelInProgress(cancel.id));
                    w.finish_command = finish.clone();
                    // Seed 004: the merchant is told when the cancel succeeded.
                    if succeeded {
                        let mut done = cancel.clone();
                        done.state = state;
                        done.updated_at = now;
                        let snapshot =
                            Snapshot::of(Topic::CancelSucceeded, p, now).with_cancel(&done);
                        enqueue(
                            &mut w,
                            p,
                            cancel.notify_url.as_deref(),
                            snapshot,
                            first_delay,
                        );
                    }
                    Ok(w)
                }),
            )
            .await?;
        self.outbox_wake.notify_one();
        let (payment, row) = settled_row(settled, |_, cancel| cancel)?;
        let written = row.is_some();
        let cancel = match row {
            Some(row) => row,
            // Another answer for this cancel came first: report the cancel as it stands.
            None => self
                .store
                .cancel_by_no(Some(payment.merchant_id), &cancel.cancel_no)
                .await?
                .unwrap_or(cancel),
        };
        Ok((payment, cancel, written))
    }

    /// The wallet's late answer to a pending payment (a callback, or the sandbox control
    /// endpoint playing one).
    pub async fn wallet_settles_payment(
        &self,
        transaction_no: &str,
        outcome: ChannelOutcome,
    ) -> Result<PaymentRecord, LifecycleError> {
        let payment = self.payment_by_transaction_no(transaction_no).await?;
        if payment.payment.state() != PaymentState::Pending {
            return Err(LifecycleError::Rejected(Rejection::Replay));
        }
        let reply = ChannelReply::new(outcome);
        Ok(self.settle_payment(payment, reply, None).await?.0)
    }

    /// The wallet's late answer to a cancel in progress.
    pub async fn wallet_settles_cancel(
        &self,
        cancel_no: &str,
        outcome: ChannelOutcome,
    ) -> Result<(PaymentRecord, CancelRecord), LifecycleError> {
        let cancel = self
            .store
            .cancel_by_no(None, cancel_no)
            .await?
            .ok_or(LifecycleError::NotFound)?;
        if cancel.state.is_final() {
            return Err(LifecycleError::Rejected(Rejection::Replay));
        }
        let payment = self.payment_of(cancel.payment_id).await?;
        let reply = ChannelReply::new(outcome);
        let (payment, cancel, _) = self.settle_cancel(payment, cancel, reply, None).await?;
        Ok((payment, cancel))
    }

    /// The wallet's late answer to a refund in progress (a callback of the HTTP channel).
    pub async fn wallet_settles_refund(
        &self,
        transaction_no: &str,
        refund_no: &str,
        outcome: ChannelOutcome,
    ) -> Result<(PaymentRecord, RefundRecord), LifecycleError> {
        let payment = self.payment_by_transaction_no(transaction_no).await?;
        let refund = self
            .store
            .refund_by_no(payment.merchant_id, refund_no)
            .await?
            .filter(|r| r.payment_id == payment.id)
            .ok_or(LifecycleError::NotFound)?;
        // The wallet was never told of a held refund: an answer that names one changes
        // nothing (only a person's decision ends it).
        if !refund.state.is_final() && self.is_held(&refund).await? {
            return Ok((payment, refund));
        }
        self.settle_refund(payment, refund, ChannelReply::new(outcome))
            .await
    }

    /// Operations still waiting for the wallet since before `before`.
    pub async fn unresolved(
        &self,
        before: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Unresolved>, StoreError> {
        self.store.unresolved(before, limit).await
    }

    /// Asks the wallet what became of an operation whose answer was unknown, and records the
    /// answer. True when it is resolved now; false when the wallet still does not know.
    pub async fn resolve(&self, op: &Unresolved) -> Result<bool, LifecycleError> {
        let operation = match &op.kind {
            UnresolvedKind::Payment => QueryTarget::Payment,
            UnresolvedKind::Refund { refund_no } => QueryTarget::Refund {
                refund_no: refund_no.clone(),
            },
            UnresolvedKind::Cancel { cancel_no } => QueryTarget::Cancel {
                cancel_no: cancel_no.clone(),
            },
        };
        // What the gateway knows of the operation goes with the question (see `ChannelOp::Query`).
        let payment = self.payment_by_transaction_no(&op.transaction_no).await?;
        let amount = match &op.kind {
            UnresolvedKind::Refund { refund_no } => self
                .store
                .refund_by_no(payment.merchant_id, refund_no)
                .await?
                .map_or(payment.payment.amount(), |r| r.amount),
            UnresolvedKind::Payment | UnresolvedKind::Cancel { .. } => payment.payment.amount(),
        };
        let without_barcode = digest(&["", payment.vendor.as_deref().unwrap_or("")]);
        let qr_code = payment.pay_fingerprint.as_deref() == Some(without_barcode.as_str());
        let reply = self
            .channel_for(&op.merchant_no)
            .execute(ChannelOp::Query {
                transaction_no: op.transaction_no.clone(),
                operation,
                amount,
                qr_code,
            })
            .await;
        if reply.outcome == ChannelOutcome::Unknown {
            return Ok(false);
        }
        let tx = &op.transaction_no;
        match &op.kind {
            UnresolvedKind::Payment => self
                .wallet_settles_payment(tx, reply.outcome)
                .await
                .map(drop)
                .or_else(ignore_replay)?,
            UnresolvedKind::Refund { refund_no } => self
                .wallet_settles_refund(tx, refund_no, reply.outcome)
                .await
                .map(drop)?,
            UnresolvedKind::Cancel { cancel_no } => self
                .wallet_settles_cancel(cancel_no, reply.outcome)
                .await
                .map(drop)
                .or_else(ignore_replay)?,
        }
        Ok(true)
    }

    /// Applies a terminal's final result to the payment its command belongs to, finishing the
    /// command in the same change. Idempotent: a result for a command already done changes
    /// nothing.
    pub async fn apply_terminal_result(
        &self,
        command_id: &str,
        result: TerminalResult,
    ) -> Result<(), LifecycleError> {
        let Some(record) = self.store.command(command_id).await? else {
            return Err(LifecycleError::NotFound);
        };
        let Some(outcome) = CommandOutcome::of(result.outcome) else {
            return Ok(());
        };
        if record.state == CommandState::Done {
            return Ok(());
        }
        let finish = FinishCommand {
            command_id: command_id.to_owned(),
            outcome,
            message: result.message.clone(),
        };
        let reply = ChannelReply {
            outcome: result.outcome,
            channel_ref: None,
            message: result.message.clone(),
        };
        let payment = self.payment_of(record.payment_id).await?;
        let finished = match record.command.kind {
            CommandKind::Sale => self.settle_payment(payment, reply, Some(finish)).await?.1,
            CommandKind::Reversal | CommandKind::Cancel => {
                let cancel = self.cancel_of_command(&record, &payment).await?;
                let finish = Some(finish);
                self.settle_cancel(payment, cancel, reply, finish).await?.2
            }
        };
        if !finished {
            // The payment was settled before (by another answer): only the command is left
            // to close, and there is nothing to write with it.
            self.store
                .finish_command(command_id, outcome, result.message.as_deref(), self.now())
                .await?;
        }
        Ok(())
    }

    /// The cancel a reversal or cancel command carries.
    async fn cancel_of_command(
        &self,
        record: &CommandRecord,
        payment: &PaymentRecord,
    ) -> Result<CancelRecord, LifecycleError> {
        let missing = || LifecycleError::corrupt("cancel command without its cancel");
        let cancel_id = record.cancel_id.ok_or_else(missing)?;
        self.store
            .cancels_of(payment.id)
            .await?
            .into_iter()
            .find(|c| c.id == cancel_id)
            .ok_or_else(missing)
    }
}

/// The payment and the refund or cancel row a settling change wrote, or `None` for the row
/// when another answer settled it first (the guard did not hold).
fn settled_row<T>(
    settled: Mutated,
    row: impl FnOnce(Option<RefundRecord>, Option<CancelRecord>) -> Option<T>,
) -> Result<(PaymentRecord, Option<T>), LifecycleError> {
    match settled {
        Mutated::Done {
            payment,
            refund,
            cancel,
        } => {
            let row = row(refund, cancel).ok_or_else(|| LifecycleError::corrupt("settled row"))?;
            Ok((payment, Some(row)))
        }
        Mutated::Rejected(Rejection::Replay, p) => Ok((p, None)),
        Mutated::Rejected(r, _) => Err(LifecycleError::Rejected(r)),
    }
}
