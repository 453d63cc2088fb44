//! Cancels: the void (or close) of an unpaid transaction and the same-day reversal of a paid
//! one, silently through the wallet or shown live on a POS terminal.

use super::*;
use crate::channel::ChannelOp;
use crate::ids::new_number;
use crate::terminal::{CommandKind, NewCommand, TerminalCommand};
use tillgate_domain::{BusinessDayRule, CancelIntent, CancelRejected, CancelState};

impl Lifecycle {
    /// The customer gave up on the payment's hosted page: an unpaid payment is voided (the
    /// wallet is told); one paid meanwhile is not touched.
    pub async fn customer_closes(&self, payment: &PaymentRecord) -> Result<(), LifecycleError> {
        let merchant = self
            .store
            .merchant_by_id(payment.merchant_id)
            .await?
            .ok_or(LifecycleError::NotFound)?;
        self.cancel(
            &merchant,
            &PaymentKey::TransactionNo(payment.transaction_no.clone()),
            BusinessDayRule::calendar_day(merchant.zone),
            CancelIntent::Void,
            CancelOptions::default(),
        )
        .await?;
        Ok(())
    }

    /// Cancels a transaction: voids it when unpaid (or closes it, for `CancelIntent::Close`),
    /// reverses it in full when paid within `rule`'s business day. Asking again for a cancel
    /// that succeeded, or that is still in progress, answers with that cancel order.
    pub async fn cancel(
        &self,
        merchant: &MerchantRecord,
        key: &PaymentKey,
        rule: BusinessDayRule,
        intent: CancelIntent,
        options: CancelOptions,
    ) -> Result<Outcome<(PaymentRecord, CancelRecord)>, LifecycleError> {
        let found = self.find(merchant, key).await?;
        let wait = options.terminal_wait;
        let terminal = match &options.terminal {
            Some(tid) => match self.online_hub(tid).await {
                Ok(hub) => Some((hub, tid.clone())),
                // A retry is answered with the earlier cancel, which needs no terminal.
                Err(LifecycleError::TerminalOffline) => {
                    let retried = self.retried_cancel(&found, rule, intent).await?;
                    return retried.ok_or(LifecycleError::TerminalOffline);
                }
                Err(e) => return Err(e),
            },
            None => None,
        };
        let begun = self.begin_cancel(&found, rule, intent, options).await?;
        let (payment, cancel, command) = match begun {
            Begun::Started {
                payment,
                cancel,
                command,
            } => (payment, cancel, command),
            Begun::Earlier(outcome) => return Ok(outcome),
        };
        if let (Some((hub, tid)), Some(command)) = (terminal, command) {
            self.run_on_terminal(&hub, &tid, &command, wait).await?;
            let cancel = self
                .store
                .cancel_by_no(Some(payment.merchant_id), &cancel.cancel_no)
                .await?
                .unwrap_or(cancel);
            let payment = self.payment_of(payment.id).await.unwrap_or(payment);
            return Ok(Outcome::new((payment, cancel)));
        }
        let transaction_no = payment.transaction_no.clone();
        let amount = payment.payment.amount();
        let cancel_no = cancel.cancel_no.clone();
        let op = match cancel.kind {
            CancelKind::Void | CancelKind::Close => ChannelOp::Close {
                transaction_no,
                amount,
                cancel_no,
            },
            CancelKind::Reverse => ChannelOp::Reverse {
                transaction_no,
                amount,
                cancel_no,
            },
        };
        let reply = self.channel_for(&payment.merchant_no).execute(op).await;
        let (payment, cancel, _) = self.settle_cancel(payment, cancel, reply, None).await?;
        Ok(Outcome::new((payment, cancel)))
    }

    /// Records the intent of a cancel (and the terminal command that carries it, when it runs
    /// on a terminal) in one mutation; a retry of an earlier cancel answers with that one.
    async fn begin_cancel(
        &self,
        found: &PaymentRecord,
        rule: BusinessDayRule,
        intent: CancelIntent,
        options: CancelOptions,
    ) -> Result<Begun, LifecycleError> {
        let now = self.now();
        let cancel_no = new_number(now);
        let command_id = new_number(now);
        let on_terminal = options.terminal.is_some();
        let written_id = command_id.clone();
        let begun = self
            .store
            .mutate_from(
                found,
                Box::new(move |p| {
                    let kind = p
                        .payment
                        .begin_cancel(now, &rule, intent)
                        .map_err(Rejection::Cancel)?;
                    let mut w = Writes::at(now).event("cancel.requested", kind.as_str().to_owned());
                    w.cancel = Some(CancelWrite::Insert(NewCancel {
                        cancel_no: cancel_no.clone(),
                        kind,
                        notify_url: options.notify_url.clone(),
                        extra: options.extra.clone(),
                    }));
                    w.command = options.terminal.as_ref().map(|tid| NewCommand {
                        command: cancel_command(&written_id, kind, p),
                        tid: tid.clone(),
                    });
                    Ok(w)
                }),
            )
            .await?;
        match begun {
            Mutated::Done {
                payment,
                cancel: Some(cancel),
                ..
            } => {
                // The command as it was written with the cancel.
                let command =
                    on_terminal.then(|| cancel_command(&command_id, cancel.kind, &payment));
                Ok(Begun::Started {
                    payment,
                    cancel,
                    command,
                })
            }
            Mutated::Done { .. } => Err(LifecycleError::corrupt("cancel row")),
            Mutated::Rejected(Rejection::Cancel(rejected), p) => {
                self.earlier_cancel(p, rejected).await.map(Begun::Earlier)
            }
            Mutated::Rejected(r, _) => Err(LifecycleError::Rejected(r)),
        }
    }

    /// A retry of a cancel that succeeded, or of one still waiting for the wallet, answers
    /// with that cancel order; any other refusal stands.
    async fn earlier_cancel(
        &self,
        p: PaymentRecord,
        rejected: CancelRejected,
    ) -> Result<Outcome<(PaymentRecord, CancelRecord)>, LifecycleError> {
        let wanted = match rejected {
            CancelRejected::AlreadyCancelled | CancelRejected::Closed => CancelState::Succeeded,
            CancelRejected::InProgress => CancelState::InProgress,
            _ => return Err(LifecycleError::Rejected(Rejection::Cancel(rejected))),
        };
        let earlier = self
            .store
            .cancels_of(p.id)
            .await?
            .into_iter()
            .rev()
            .find(|c| c.state == wanted);
        match earlier {
            Some(c) => Ok(Outcome::replay((p, c))),
            None => Err(LifecycleError::Rejected(Rejection::Cancel(rejected))),
        }
    }

    /// The earlier cancel that answers a retry, decided on `found` without writing anything;
    /// `None` when the request is no retry.
    async fn retried_cancel(
        &self,
        found: &PaymentRecord,
        rule: BusinessDayRule,
        intent: CancelIntent,
    ) -> Result<Option<Outcome<(PaymentRecord, CancelRecord)>>, LifecycleError> {
        let Err(rejected) = found
            .payment
            .clone()
            .begin_cancel(self.now(), &rule, intent)
        else {
            return Ok(None);
        };
        match self.earlier_cancel(found.clone(), rejected).await {
            Ok(earlier) => Ok(Some(earlier)),
            Err(LifecycleError::Rejected(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A cancel order of the merchant, with its payment.
    pub async fn cancel_by_no(
        &self,
        merchant: &MerchantRecord,
        cancel_no: &str,
    ) -> Result<(PaymentRecord, CancelRecord), LifecycleError> {
        let cancel = self
            .store
            .cancel_by_no(Some(merchant.id), cancel_no)
            .await?
            .ok_or(LifecycleError::NotFound)?;
        let payment = self.payment_of(cancel.payment_id).await?;
        Ok((payment, cancel))
    }
}

/// What beginning a cancel did.
#[allow(clippy::large_enum_variant)]
enum Begun {
    /// The cancel is recorded and in progress; `command` carries it when it runs on a terminal.
    Started {
        payment: PaymentRecord,
        cancel: CancelRecord,
        command: Option<TerminalCommand>,
    },
    /// A retry: the earlier cancel's answer.
    Earlier(Outcome<(PaymentRecord, CancelRecord)>),
}

/// The terminal command that carries a cancel of `kind` of payment `p`.
fn cancel_command(id: &str, kind: CancelKind, p: &PaymentRecord) -> TerminalCommand {
    TerminalCommand {
        id: id.to_owned(),
        kind: if kind == CancelKind::Reverse {
            CommandKind::Reversal
        } else {
            CommandKind::Cancel
        },
        transaction_no: p.transaction_no.clone(),
        amount_minor: p.payment.amount().minor(),
        currency: p.payment.amount().currency().code().to_owned(),
        description: p.description.clone(),
    }
}
