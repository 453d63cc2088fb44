//! A query's answer in one read: the payment with its refunds, found by either key, only for
//! its own merchant.

use std::sync::Arc;
use tillgate_core::service::AddRequest;
use tillgate_core::PaymentKey;
use tillgate_domain::{ChannelOutcome, MerchantZone};
use tillgate_testkit::{add_request, key, pay_request, refund_request, usd, Kit, ScriptedWallet};

#[tokio::test]
async fn a_payment_is_read_with_its_refunds_by_either_key_and_only_for_its_merchant() {
    let wallet = Arc::new(ScriptedWallet::new(ChannelOutcome::Approved));
    let kit = Kit::builder("query-read").channel(wallet).build().await;
    let merchant = kit.merchant("940001", MerchantZone::utc()).await;
    let other = kit.merchant("940002", MerchantZone::utc()).await;
    let req = AddRequest {
        store_no: "1".into(),
        notify_url: None,
        ..add_request("q-1", usd(10_000))
    };
    let added = kit.app.add(&merchant, req).await.unwrap();
    let paid = kit
        .app
        .pay(&merchant, &key(&added.value), pay_request())
        .await
        .unwrap()
        .value;
    for (amount, reference) in [(1_500, "r-1"), (2_500, "r-2")] {
        kit.app
            .refund(
                &merchant,
                &key(&paid),
                refund_request(usd(amount), Some(reference)),
            )
            .await
            .unwrap();
    }

    let by_no = PaymentKey::TransactionNo(paid.transaction_no.clone());
    let by_reference = PaymentKey::Reference("q-1".into());
    for k in [&by_no, &by_reference] {
        let (payment, refunds) = kit
            .store
            .payment_with_refunds(merchant.id, k)
            .await
            .unwrap()
            .expect("found");
        let alone = kit.store.payment(merchant.id, k).await.unwrap().unwrap();
        assert_eq!(payment.id, alone.id);
        assert_eq!(payment.version, alone.version);
        assert_eq!(payment.payment.refunded().minor(), 4_000);
        let amounts: Vec<i64> = refunds.iter().map(|r| r.amount.minor()).collect();
        assert_eq!(amounts, vec![1_500, 2_500], "oldest first");
        assert_eq!(
            refunds.len(),
            kit.store.refunds_of(payment.id).await.unwrap().len()
        );
    }
    // Another merchant's key finds nothing, whichever key it sends.
    for k in [&by_no, &by_reference] {
        assert!(kit
            .store
            .payment_with_refunds(other.id, k)
            .await
            .unwrap()
            .is_none());
    }
    let missing = PaymentKey::Reference("no-such".into());
    assert!(kit
        .store
        .payment_with_refunds(merchant.id, &missing)
        .await
        .unwrap()
        .is_none());
}
