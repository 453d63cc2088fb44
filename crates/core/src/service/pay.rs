//! Adding a transaction, paying it through the wallet, and querying it.

use super::*;
use crate::channel::ChannelOp;
use crate::ids::new_number;
use chrono::Duration;
use tillgate_domain::PayRejected;

impl Lifecycle {
    /// Adds a transaction. The merchant's reference is the idempotency key: the same reference
    /// with the same parameters replays the first answer, with other parameters it is refused.
    pub async fn add(
        &self,
        merchant: &MerchantRecord,
        req: AddRequest,
    ) -> Result<Outcome<PaymentRecord>, LifecycleError> {
        let timeout = req
            .timeout_minutes
            .unwrap_or(self.config.default_timeout_minutes);
        let fingerprint = digest(&[
            &req.store_no,
            &req.amount.minor().to_string(),
            req.amount.currency().code(),
            req.settle_currency.code(),
            req.description.as_deref().unwrap_or(""),
            req.notify_url.as_deref().unwrap_or(""),
            &timeout.to_string(),
            req.dialect.as_str(),
            req.extra.as_deref().unwrap_or(""),
        ]);
        let now = self.now();
        for _ in 0..3 {
            let new = NewPayment {
                transaction_no: new_number(now),
                merchant_id: merchant.id,
                merchant_no: merchant.merchant_no.clone(),
                store_no: req.store_no.clone(),
                reference: req.reference.as_str().to_owned(),
                amount: req.amount,
                settle_currency: req.settle_currency,
                description: req.description.clone(),
                notify_url: req.notify_url.clone(),
                dialect: req.dialect,
                extra: req.extra.clone(),
                fingerprint: fingerprint.clone(),
                created_at: now,
                expires_at: now + Duration::minutes(timeout),
            };
            let inserted = self.store.insert_payment(new).await;
            if let Ok(Inserted::Inserted(p) | Inserted::Existing(p)) = &inserted {
                crate::note::transaction(&p.transaction_no);
            }
            match inserted {
                Ok(Inserted::Inserted(p)) => return Ok(Outcome::new(p)),
                Ok(Inserted::Existing(p)) if p.fingerprint == fingerprint => {
                    return Ok(Outcome::replay(p))
                }
                Ok(Inserted::Existing(_)) => return Err(LifecycleError::KeyReused),
                // A generated number clashed: draw another.
                Err(StoreError::Conflict(Conflict::UniqueKey)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Conflict(Conflict::TransactionNo).into())
    }

    /// Submits a transaction to the wallet and records its answer. Paying again with the same
    /// barcode replays the current state; another barcode on a submitted payment is refused.
    pub async fn pay(
        &self,
        merchant: &MerchantRecord,
        key: &PaymentKey,
        req: PayRequest,
    ) -> Result<Outcome<PaymentRecord>, LifecycleError> {
        let found = self.find(merchant, key).await?;
        let fingerprint = digest(&[
            req.barcode.as_deref().unwrap_or(""),
            req.vendor.as_deref().unwrap_or(""),
        ]);
        let now = self.now();
        let vendor = req.vendor.clone();
        let submitted = self
            .store
            .mutate_from(
                &found,
                Box::new(move |p| {
                    if p.payment.state() != PaymentState::Created
                        && p.pay_fingerprint.as_deref() == Some(fingerprint.as_str())
                    {
                        return Err(Rejection::Replay);
                    }
                    // An expired payment is closed, unless a cancel of it is in flight (then
                    // `submit` refuses it: the wallet may be abandoning it right now).
                    if now > p.expires_at && p.payment.expire() {
                        return Ok(Writes::at(now).event("payment.expired", String::new()));
                    }
                    p.payment.submit().map_err(Rejection::Pay)?;
                    p.pay_fingerprint = Some(fingerprint.clone());
                    p.vendor = vendor.clone();
                    Ok(Writes::at(now).event("payment.submitted", String::new()))
                }),
            )
            .await?;
        let payment = match submitted {
            Mutated::Done { payment, .. } => payment,
            Mutated::Rejected(Rejection::Replay, p) => return Ok(Outcome::replay(p)),
            Mutated::Rejected(r, _) => return Err(LifecycleError::Rejected(r)),
        };
        if payment.payment.state() == PaymentState::Closed {
            return Err(LifecycleError::Rejected(Rejection::Pay(
                PayRejected::Closed,
            )));
        }
        let reply = self
            .channel_for(&payment.merchant_no)
            .execute(ChannelOp::Pay {
                transaction_no: payment.transaction_no.clone(),
                amount: payment.payment.amount(),
                barcode: req.barcode,
                vendor: req.vendor,
            })
            .await;
        let (payment, _) = self.settle_payment(payment, reply, None).await?;
        Ok(Outcome::new(payment))
    }

    /// A payment with its refunds.
    pub async fn query(
        &self,
        merchant: &MerchantRecord,
        key: &PaymentKey,
    ) -> Result<PaymentWithRefunds, LifecycleError> {
        let (payment, refunds) = self
            .store
            .payment_with_refunds(merchant.id, key)
            .await?
            .ok_or(LifecycleError::NotFound)?;
        crate::note::transaction(&payment.transaction_no);
        Ok(PaymentWithRefunds { payment, refunds })
    }

    /// Moves a payment's times `by` into the past, as if it had been created and paid earlier
    /// (sandbox only: lets a developer try next-day rules such as the same-day cancel).
    pub async fn sandbox_age_payment(
        &self,
        transaction_no: &str,
        by: Duration,
    ) -> Result<PaymentRecord, LifecycleError> {
        let found = self.payment_by_transaction_no(transaction_no).await?;
        let now = self.now();
        let aged = self
            .store
            .mutate_from(
                &found,
                Box::new(move |p| {
                    let q = &p.payment;
                    let paid_at = q.paid_at().map(|t| t - by);
                    p.payment = Payment::restore(
                        q.amount(),
                        q.state(),
                        q.refunded().minor(),
                        q.reserved().minor(),
                        q.cancel_in_flight(),
                        paid_at,
                    )
                    .ok_or(Rejection::Replay)?;
                    p.created_at -= by;
                    p.expires_at -= by;
                    let mut w =
                        Writes::at(now).event("sandbox.aged", format!("{}s", by.num_seconds()));
                    w.created_at = Some(p.created_at);
                    Ok(w)
                }),
            )
            .await?;
        match aged {
            Mutated::Done { payment, .. } => Ok(payment),
            Mutated::Rejected(r, _) => Err(LifecycleError::Rejected(r)),
        }
    }
}
