//! Pure pricing domain logic shared by the edge server and the control plane.
//!
//! Nothing in this crate does I/O. Money is an integer count of minor units plus an
//! ISO 4217 currency ([`money`]); prices are addressed by [`key::PriceKey`] with `*`
//! fallback on store, channel and segment; [`entry::PriceEntry`] is what a snapshot
//! holds for one key. [`promo`] evaluates carts against promotions (stacking, floor
//! clamps, largest-remainder spreading); [`quote`] turns an evaluation into a signed,
//! expiring price lock.

pub mod entry;
pub mod guardrail;
pub mod key;
pub mod money;
pub mod promo;
pub mod quote;

pub use entry::{EntryError, PriceEntry, PromotionTag};
pub use guardrail::{
    floor_for, guard, Discount, Floor, GuardedPrice, GuardrailError, GuardrailPolicy,
    PromotionVerdict, Rule, SkuEconomics,
};
pub use key::{Dimension, KeyError, PriceKey, Sku, ANY};
pub use money::{Currency, Money, MoneyError};
