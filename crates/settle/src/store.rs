//! The store device 4 (a single store, or a mall whose member stores sell under the mall's
//! key), I/O-free: its catalog, the estimate (ST3), the bill signed SIG1 (ST5), the check of
//! the application server's completion SIG3, and the receipt it signs SIG4, which entitles
//! the holder to the order's goods.

use std::collections::BTreeMap;

use valuecard_core::crypto::{PublicKey, Signature, SigningKeyPair};
use valuecard_core::ids::DeviceId;
use valuecard_core::messages::online::{
    Bill, BillLine, Receipt, SettlementCompletion, BILL_LINES_MAX,
};
use valuecard_core::money::Amount;
use valuecard_core::time::Date;

/// How long a bill may be settled after it was issued, in days.
pub const BILL_VALID_DAYS: u32 = 1;

/// One thing a store sells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogItem {
    pub sku: String,
    /// The member store that sells it (the mall itself for a single store).
    pub member_store: DeviceId,
    pub title: String,
    pub price: Amount,
}

/// Why the store refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("the store sells no item {0:?}")]
    UnknownItem(String),
    #[error("an order needs 1 to {BILL_LINES_MAX} lines of items from one member store")]
    BadOrder,
    #[error("the order's total does not fit an amount")]
    TooLarge,
    #[error("the completion's signature does not verify under the application server's key")]
    ForgedCompletion,
    #[error("the completion is not for this store's order {0}")]
    WrongOrder(u64),
}

/// A store or mall: its identity, signing key and catalog.
pub struct Store {
    pub id: DeviceId,
    key: SigningKeyPair,
    catalog: BTreeMap<String, CatalogItem>,
    /// The application server's key, which signs completions (SIG3).
    application_key: PublicKey,
}

impl core::fmt::Debug for Store {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Store")
            .field("id", &self.id)
            .field("items", &self.catalog.len())
            .finish_non_exhaustive()
    }
}

impl Store {
    pub fn new(
        id: DeviceId,
        key: SigningKeyPair,
        catalog: Vec<CatalogItem>,
        application_key: PublicKey,
    ) -> Self {
        Store {
            id,
            key,
            catalog: catalog
                .into_iter()
                .map(|item| (item.sku.clone(), item))
                .collect(),
            application_key,
        }
    }

    /// The key the application server checks SIG1 and SIG4 with.
    pub fn public_key(&self) -> PublicKey {
        self.key.public_key()
    }

    pub fn catalog(&self) -> impl Iterator<Item = &CatalogItem> {
        self.catalog.values()
    }

    /// ST3 and ST5: the bill for `order` (SKU and quantity per line), numbered
    /// `order_number`, signed SIG1. Every line must come from one member store.
    pub fn bill(
        &self,
        order: &[(String, u32)],
        order_number: u64,
        today: Date,
    ) -> Result<(Bill, Signature), StoreError> {
        let bill = self.estimate(order, order_number, today)?;
        let signature = self.sign_bill(&bill);
        Ok((bill, signature))
    }

    /// SIG1 over a bill this store estimated.
    pub fn sign_bill(&self, bill: &Bill) -> Signature {
        self.key.sign(&bill.signed_message())
    }

    /// ST3: the estimate of `order`, the bill it would be, unsigned: binds nobody.
    pub fn estimate(
        &self,
        order: &[(String, u32)],
        order_number: u64,
        today: Date,
    ) -> Result<Bill, StoreError> {
        if order.is_empty() || order.len() > BILL_LINES_MAX {
            return Err(StoreError::BadOrder);
        }
        let mut lines = Vec::with_capacity(order.len());
        let mut member = None;
        for (sku, quantity) in order {
            let item = self
                .catalog
                .get(sku)
                .ok_or_else(|| StoreError::UnknownItem(sku.clone()))?;
            if *quantity == 0 || *member.get_or_insert(item.member_store) != item.member_store {
                return Err(StoreError::BadOrder);
            }
            lines.push(BillLine {
                item: item.title.clone(),
                quantity: *quantity,
                unit_price: item.price,
            });
        }
        let total = Bill::sum_of_lines(&lines).ok_or(StoreError::TooLarge)?;
        let member_store = member.filter(|member| *member != self.id);
        let bill = Bill {
            store: self.id,
            member_store,
            order_number,
            lines,
            total,
            issued: today,
            expires: today.add_days(BILL_VALID_DAYS),
        };
        Ok(bill)
    }

    /// The catalog item `sku`.
    pub fn item(&self, sku: &str) -> Option<&CatalogItem> {
        self.catalog.get(sku)
    }

    /// ST19-ST20 at the store: checks SIG3 over the completion of its own order and signs
    /// the receipt SIG4.
    pub fn receipt(
        &self,
        bill: &Bill,
        completion: &SettlementCompletion,
        signature: &Signature,
        today: Date,
    ) -> Result<(Receipt, Signature), StoreError> {
        self.application_key
            .verify(&completion.signed_message(), signature)
            .map_err(|_| StoreError::ForgedCompletion)?;
        if completion.store != self.id
            || completion.order_number != bill.order_number
            || completion.bill_digest != bill.digest()
            || completion.amount != bill.total
        {
            return Err(StoreError::WrongOrder(bill.order_number));
        }
        let receipt = Receipt {
            settlement_id: completion.settlement_id,
            completion_digest: completion.digest(),
            store: self.id,
            order_number: bill.order_number,
            amount: bill.total,
            date: today,
        };
        let signature = self.key.sign(&receipt.signed_message());
        Ok((receipt, signature))
    }
}
