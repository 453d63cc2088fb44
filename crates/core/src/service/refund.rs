//! Refunds in parts: admitted and reserved atomically, then asked of the wallet.

use super::*;
use crate::channel::{ChannelOp, ChannelReply};
use crate::console::ApprovalState;
use crate::ids::new_number;
use tillgate_domain::{ChannelOutcome, RefundRejected, RefundState};

impl Lifecycle {
    /// Refunds part or all of a paid transaction, asked through a merchant API. The
    /// refundable amount is checked and reserved in one atomic step, so concurrent refunds
    /// never exceed what was paid. The merchant's refund reference, when given, is the
    /// idempotency key. When the merchant's policy holds API refunds for approval
    /// (`MerchantRecord::holds_api_refund`, read from the store, not from a cached
    /// credential), the reserved refund is answered in progress and waits for a person's
    /// decision (`approve_held_refund`, `reject_held_refund`) instead of going to the wallet.
    pub async fn refund(
        &self,
        merchant: &MerchantRecord,
        key: &PaymentKey,
        req: RefundRequest,
    ) -> Result<Outcome<(PaymentRecord, RefundRecord)>, LifecycleError> {
        let policy = self
            .store
            .merchant_by_id(merchant.id)
            .await?
            .ok_or(LifecycleError::NotFound)?;
        let hold = policy.holds_api_refund(req.amount.minor());
        self.refund_with(merchant, key, req, hold).await
    }

    /// Refunds at once, never held: a refund a person asked for in the console, whose
    /// authority (or a second person's approval) the console has checked.
    pub async fn refund_at_once(
        &self,
        merchant: &MerchantRecord,
        key: &PaymentKey,
        req: RefundRequest,
    ) -> Result<Outcome<(PaymentRecord, RefundRecord)>, LifecycleError> {
        self.refund_with(merchant, key, req, false).await
    }

    async fn refund_with(
        &self,
        merchant: &MerchantRecord,
        key: &PaymentKey,
        req: RefundRequest,
        hold: bool,
    ) -> Result<Outcome<(PaymentRecord, RefundRecord)>, LifecycleError> {
        if req.refund_reference.is_none() && self.refund_reference_required(merchant) {
            return Err(LifecycleError::RefundReferenceRequired);
        }
        let found = self.find(merchant, key).await?;
        let mismatch = req.amount.currency() != found.payment.amount().currency()
            || req
                .settle_currency
                .is_some_and(|c| c != found.settle_currency);
        if mismatch {
            return Err(LifecycleError::Rejected(Rejection::Refund(
                RefundRejected::CurrencyMismatch,
            )));
        }
        let fingerprint = digest(&[
            &found.transaction_no,
            &req.amount.minor().to_string(),
            req.amount.currency().code(),
        ]);
        // The reference is not looked up first: the unique index answers whether it is taken
        // (the reservation's insert is refused), so a new refund costs no read for it. It is
        // read only when the reservation fails: a key taken, or a refusal that may be a
        // replay's (the first request may have refunded the whole payment).
        for _ in 0..2 {
            let failed = match self.reserve_refund(&found, &req, &fingerprint, hold).await {
                // Held: reserved, and left for a person to decide.
                Ok((payment, refund)) if hold => return Ok(Outcome::new((payment, refund))),
                Ok((payment, refund)) => return self.execute_refund(payment, refund).await,
                Err(e) => e,
            };
            let taken = matches!(
                failed,
                LifecycleError::Store(StoreError::Conflict(Conflict::UniqueKey))
            );
            if taken || matches!(failed, LifecycleError::Rejected(_)) {
                if let Some(reference) = &req.refund_reference {
                    if let Some(existing) = self
                        .store
                        .refund_by_reference(merchant.id, reference.as_str())
                        .await?
                    {
                        return self.replay_refund(existing, &fingerprint).await;
                    }
                }
            }
            // A clash of generated numbers simply tries again.
            if !taken {
                return Err(failed);
            }
        }
        Err(LifecycleError::InProgress)
    }

    /// Checks the refundable amount and reserves the refund's amount in one atomic change,
    /// writing the refund row (in progress) with it, and with `hold` its pending approval.
    async fn reserve_refund(
        &self,
        found: &PaymentRecord,
        req: &RefundRequest,
        fingerprint: &str,
        hold: bool,
    ) -> Result<(PaymentRecord, RefundRecord), LifecycleError> {
        let now = self.now();
        let new = NewRefund {
            refund_no: new_number(now),
            refund_reference: req.refund_reference.as_ref().map(|k| k.as_str().to_owned()),
            amount: req.amount,
            fingerprint: fingerprint.to_owned(),
            notify_url: match &req.notify {
                NotifyTo::Nowhere => None,
                NotifyTo::Url(url) => Some(url.clone()),
                NotifyTo::PaymentUrl => found.notify_url.clone(),
            },
            extra: req.extra.clone(),
        };
        let reserved = self
            .store
            .mutate_from(
                found,
                Box::new(move |p| {
                    p.payment
                        .reserve_refund(new.amount)
                        .map_err(Rejection::Refund)?;
                    let mut w =
                        Writes::at(now).event("refund.requested", new.amount.minor().to_string());
                    if hold {
                        w = w.event("refund.held", "waits for a person's approval".into());
                    }
                    w.refund = Some(RefundWrite::Insert(new.clone()));
                    w.hold = hold;
                    Ok(w)
                }),
            )
            .await?;
        match reserved {
            Mutated::Done {
                payment,
                refund: Some(refund),
                ..
            } => Ok((payment, refund)),
            Mutated::Done { .. } => Err(LifecycleError::corrupt("refund row")),
            Mutated::Rejected(r, _) => Err(LifecycleError::Rejected(r)),
        }
    }

    /// The answer to a refund whose reference was used before.
    async fn replay_refund(
        &self,
        existing: RefundRecord,
        fingerprint: &str,
    ) -> Result<Outcome<(PaymentRecord, RefundRecord)>, LifecycleError> {
        if existing.fingerprint != fingerprint {
            return Err(LifecycleError::KeyReused);
        }
        if !existing.state.is_final() && !self.is_held(&existing).await? {
            return Err(LifecycleError::InProgress);
        }
        // A final refund, or one held for a decision (nothing is working on it: its retry
        // is answered with its state, in progress, like its first answer).
        let payment = self.payment_of(existing.payment_id).await?;
        Ok(Outcome::replay((payment, existing)))
    }

    /// Whether a refund in progress was never sent to the wallet: held for an approval not
    /// given (pending, or rejected and about to fail).
    pub(super) async fn is_held(&self, refund: &RefundRecord) -> Result<bool, LifecycleError> {
        Ok(self
            .store
            .approval_of_refund(refund.id)
            .await?
            .is_some_and(|a| a.state != ApprovalState::Approved))
    }

    /// The held refund `refund_id` of `payment_id`, with its payment.
    async fn held(
        &self,
        payment_id: i64,
        refund_id: i64,
    ) -> Result<(PaymentRecord, RefundRecord), LifecycleError> {
        let payment = self.payment_of(payment_id).await?;
        let refund = self
            .store
            .refunds_of(payment_id)
            .await?
            .into_iter()
            .find(|r| r.id == refund_id)
            .ok_or(LifecycleError::NotFound)?;
        Ok((payment, refund))
    }

    /// Carries out a held refund whose approval was just given (the caller decided it, once,
    /// in the store): the wallet is asked through the normal path, and its answer settles it
    /// and notifies the merchant. A refund already settled is answered as it stands.
    pub async fn approve_held_refund(
        &self,
        payment_id: i64,
        refund_id: i64,
    ) -> Result<Outcome<(PaymentRecord, RefundRecord)>, LifecycleError> {
        let (payment, refund) = self.held(payment_id, refund_id).await?;
        if refund.state.is_final() {
            return Ok(Outcome::replay((payment, refund)));
        }
        // Released: the refund is sent now, so it waits for the wallet from now on (its
        // time moves, and the janitor asks about it only once it has waited as any other).
        let now = self.now();
        let id = refund.id;
        let released = self
            .store
            .mutate_from(
                &payment,
                Box::new(move |_| {
                    let mut w = Writes::at(now).event("refund.approved", String::new());
                    w.refund = Some(RefundWrite::SetState {
                        refund_id: id,
                        state: RefundState::InProgress,
                    });
                    w.guard = Some(Guard::RefundInProgress(id));
                    Ok(w)
                }),
            )
            .await?;
        match released {
            Mutated::Done {
                payment,
                refund: Some(refund),
                ..
            } => self.execute_refund(payment, refund).await,
            Mutated::Done { .. } => Err(LifecycleError::corrupt("refund row")),
            // Settled meanwhile: answered as it stands.
            Mutated::Rejected(_, _) => {
                let (payment, refund) = self.held(payment_id, refund_id).await?;
                Ok(Outcome::replay((payment, refund)))
            }
        }
    }

    /// Fails a held refund whose approval was just refused (the caller decided it, once, in
    /// the store): its reservation is released, it ends failed, and the merchant is notified
    /// of the failure as of a refund the wallet declined. The wallet never hears of it.
    pub async fn reject_held_refund(
        &self,
        payment_id: i64,
        refund_id: i64,
        reason: &str,
    ) -> Result<Outcome<(PaymentRecord, RefundRecord)>, LifecycleError> {
        let (payment, refund) = self.held(payment_id, refund_id).await?;
        if refund.state.is_final() {
            return Ok(Outcome::replay((payment, refund)));
        }
        let reply = ChannelReply {
            outcome: ChannelOutcome::Declined,
            channel_ref: None,
            message: Some(format!("rejected: {reason}")),
        };
        Ok(Outcome::new(
            self.settle_refund_noted(payment, refund, reply, Some("refund.rejected"))
                .await?,
        ))
    }

    /// Asks the wallet to carry out a reserved refund and records its answer.
    async fn execute_refund(
        &self,
        payment: PaymentRecord,
        refund: RefundRecord,
    ) -> Result<Outcome<(PaymentRecord, RefundRecord)>, LifecycleError> {
        let reply = self
            .channel_for(&payment.merchant_no)
            .execute(ChannelOp::Refund {
                transaction_no: payment.transaction_no.clone(),
                refund_no: refund.refund_no.clone(),
                amount: refund.amount,
            })
            .await;
        Ok(Outcome::new(
            self.settle_refund(payment, refund, reply).await?,
        ))
    }

    /// A refund of the merchant, with its payment.
    pub async fn refund_by(
        &self,
        merchant: &MerchantRecord,
        key: &RefundKey,
    ) -> Result<(PaymentRecord, RefundRecord), LifecycleError> {
        let refund = match key {
            RefundKey::RefundNo(n) => self.store.refund_by_no(merchant.id, n).await?,
            RefundKey::Reference(r) => self.store.refund_by_reference(merchant.id, r).await?,
        }
        .ok_or(LifecycleError::NotFound)?;
        let payment = self.payment_of(refund.payment_id).await?;
        Ok((payment, refund))
    }
}
