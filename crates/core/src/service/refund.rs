//! Refunds in parts: admitted and reserved atomically, then asked of the wallet.

use super::*;
use crate::channel::ChannelOp;
use crate::ids::new_number;
use tillgate_domain::RefundRejected;

impl Lifecycle {
    /// Refunds part or all of a paid transaction. The refundable amount is checked and
    /// reserved in one atomic step, so concurrent refunds never exceed what was paid. The
    /// merchant's refund reference, when given, is the idempotency key.
    pub async fn refund(
        &self,
        merchant: &MerchantRecord,
        key: &PaymentKey,
        req: RefundRequest,
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
            let failed = match self.reserve_refund(&found, &req, &fingerprint).await {
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
    /// writing the refund row (in progress) with it.
    async fn reserve_refund(
        &self,
        found: &PaymentRecord,
        req: &RefundRequest,
        fingerprint: &str,
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
                    w.refund = Some(RefundWrite::Insert(new.clone()));
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
        if !existing.state.is_final() {
            return Err(LifecycleError::InProgress);
        }
        let payment = self.payment_of(existing.payment_id).await?;
        Ok(Outcome::replay((payment, existing)))
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
