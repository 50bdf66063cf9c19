//! Quotes: the price lock a cart gets at the edge and checkout honours.
//!
//! A [`Quote`] is the signed part of an [`Evaluation`]: per line the SKU, quantity,
//! unit list and unit price, each discount with the promotion that gave it and the line
//! total; the totals; applied coupon codes; the versions it was priced under (snapshot,
//! promotions, stacking policy); who and where (store, channel, segment, customer); and
//! when it was issued and expires. Floors and explanations are not part of it: the token
//! is readable by the client.
//!
//! # Use
//!
//! `POST /v1/quote`: [`issue`] (or [`crate::promo::evaluate`], [`Quote::new`] and
//! [`Keyring::sign`] separately) returns the evaluation to render and the token.
//! Checkout: [`Keyring::verify`] returns the locked [`Quote`] or a [`TokenError`] whose
//! [`TokenError::code`] is the API error code. Expiry is `issued_at_ms + ttl_ms`,
//! [`DEFAULT_TTL_MS`] (15 minutes) unless configured.
//!
//! # Token
//!
//! `base64url(payload) "." kid "." base64url(mac)`, base64url without padding (RFC 4648
//! §5), `kid` the signing key's id (`[A-Za-z0-9_-]{1,32}`), `mac` the HMAC-SHA256 under
//! that key of the ASCII bytes `base64url(payload) "." kid` (so the key id is covered
//! too). Verification compares MACs in constant time ([`hmac::Mac::verify_slice`]) and
//! checks the MAC before it decodes anything.
//!
//! # Canonical encoding (format version 1)
//!
//! Integers are big-endian, fixed width, signed ones two's complement. `str` is a `u32`
//! byte length followed by UTF-8 bytes; `opt str` is a `u8` 0 (absent) or 1 followed by
//! a `str`; lists are a `u32` count followed by the items. Fields, in this order:
//!
//! ```text
//! "EPQ" (3 bytes)   u8 format version = 1
//! u64 snapshot_version   u64 promotions_version   u32 policy_version
//! 3 bytes currency (ISO 4217 code)
//! str store   str channel   str segment   opt str customer_id
//! i64 issued_at_ms   i64 expires_at_ms
//! u32 line count, then per line (in canonical SKU order):
//!     str sku   u32 quantity   i64 unit_list_price   i64 unit_price   i64 total
//!     u32 discount count, then per discount (in the order applied):
//!         str promotion_id   i64 amount
//! i64 × 10 totals: list, subtotal, item_discount, cart_discount, discount,
//!     merchandise, shipping_fee, shipping_discount, shipping, total
//! opt str shipping_promotion_id
//! u32 coupon count, then per applied coupon (sorted by code): str code   str promotion_id
//! ```
//!
//! The encoding has exactly one form per quote and the evaluation is canonical
//! (independent of line and coupon order), so the same cart, context, snapshot and time
//! always give the same payload bytes.

mod encode;
mod sign;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

use crate::key::{Dimension, Sku};
use crate::money::Currency;
use crate::promo::{
    evaluate, CartContext, CartLine, CouponStatus, EvalError, Evaluation, PromotionSet, Totals,
};

pub use encode::{decode, encode, DecodeError, MAGIC};
pub use sign::{Keyring, KeyringError, TokenError, MAX_KEY_ID_LEN, MIN_SECRET_LEN};

/// Version of the canonical encoding.
pub const QUOTE_FORMAT_VERSION: u8 = 1;

/// Default lifetime of a quote: 15 minutes.
pub const DEFAULT_TTL_MS: i64 = 15 * 60 * 1_000;

/// Longest accepted lifetime: 24 hours.
pub const MAX_TTL_MS: i64 = 24 * 60 * 60 * 1_000;

/// One discount on a quoted line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuoteDiscount {
    pub promotion_id: String,
    pub amount_minor: i64,
}

/// One quoted line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuoteLine {
    pub sku: Sku,
    pub quantity: u32,
    pub unit_list_price_minor: i64,
    pub unit_price_minor: i64,
    pub discounts: Vec<QuoteDiscount>,
    pub total_minor: i64,
}

/// A coupon code the quote applied; checkout reserves its redemption.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuoteCoupon {
    pub code: String,
    pub promotion_id: String,
}

/// A priced cart, locked until `expires_at_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    pub snapshot_version: u64,
    pub promotions_version: u64,
    pub policy_version: u32,
    pub currency: Currency,
    pub store: Dimension,
    pub channel: Dimension,
    pub segment: Dimension,
    pub customer_id: Option<String>,
    pub issued_at_ms: i64,
    pub expires_at_ms: i64,
    pub lines: Vec<QuoteLine>,
    pub totals: Totals,
    pub shipping_promotion_id: Option<String>,
    pub coupons: Vec<QuoteCoupon>,
}

/// Why a quote could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    #[error(transparent)]
    Cart(#[from] EvalError),
    #[error("quote lifetime {0} ms is outside 1..={MAX_TTL_MS}")]
    Ttl(i64),
}

impl Quote {
    /// The quote for an evaluation made with `ctx`, issued at `ctx.now_ms`, expiring
    /// `ttl_ms` later.
    pub fn new(
        evaluation: &Evaluation,
        ctx: &CartContext,
        snapshot_version: u64,
        ttl_ms: i64,
    ) -> Result<Quote, QuoteError> {
        if !(1..=MAX_TTL_MS).contains(&ttl_ms) {
            return Err(QuoteError::Ttl(ttl_ms));
        }
        let expires_at_ms = ctx
            .now_ms
            .checked_add(ttl_ms)
            .ok_or(QuoteError::Ttl(ttl_ms))?;
        Ok(Quote {
            snapshot_version,
            promotions_version: evaluation.promotions_version,
            policy_version: evaluation.policy_version,
            currency: evaluation.currency,
            store: ctx.store.clone(),
            channel: ctx.channel.clone(),
            segment: ctx.segment.clone(),
            customer_id: ctx.customer_id.clone(),
            issued_at_ms: ctx.now_ms,
            expires_at_ms,
            lines: evaluation
                .lines
                .iter()
                .map(|line| QuoteLine {
                    sku: line.sku.clone(),
                    quantity: line.quantity,
                    unit_list_price_minor: line.unit_list_price_minor,
                    unit_price_minor: line.unit_price_minor,
                    discounts: line
                        .discounts
                        .iter()
                        .map(|d| QuoteDiscount {
                            promotion_id: d.promotion_id.clone(),
                            amount_minor: d.amount_minor,
                        })
                        .collect(),
                    total_minor: line.total_minor,
                })
                .collect(),
            totals: evaluation.totals,
            shipping_promotion_id: evaluation.shipping_promotion_id.clone(),
            coupons: evaluation
                .coupons
                .iter()
                .filter(|c| c.status == CouponStatus::Applied)
                .filter_map(|c| {
                    Some(QuoteCoupon {
                        code: c.code.clone(),
                        promotion_id: c.promotion_id.clone()?,
                    })
                })
                .collect(),
        })
    }
}

/// An evaluated, signed cart: what `POST /v1/quote` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedQuote {
    /// Lines, discounts, explanation: for the response body.
    pub evaluation: Evaluation,
    /// What the token locks.
    pub quote: Quote,
    /// The signed token for checkout.
    pub token: String,
}

/// Evaluates a cart, builds its quote and signs it with the keyring's active key.
pub fn issue(
    set: &PromotionSet,
    lines: &[CartLine],
    ctx: &CartContext,
    snapshot_version: u64,
    ttl_ms: i64,
    keyring: &Keyring,
) -> Result<IssuedQuote, QuoteError> {
    let evaluation = evaluate(set, lines, ctx)?;
    let quote = Quote::new(&evaluation, ctx, snapshot_version, ttl_ms)?;
    let token = keyring.sign(&quote);
    Ok(IssuedQuote {
        evaluation,
        quote,
        token,
    })
}
