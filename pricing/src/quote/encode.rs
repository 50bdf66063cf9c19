//! The canonical byte encoding of a [`Quote`] (format version 1), described in the
//! module docs of [`crate::quote`]. Encoding is a pure function of the quote; decoding
//! is strict: it rejects unknown versions, bad UTF-8, invalid SKUs, dimensions or
//! currencies, impossible counts and trailing bytes.

use crate::key::{Dimension, Sku};
use crate::money::Currency;
use crate::promo::Totals;

use super::{Quote, QuoteCoupon, QuoteDiscount, QuoteLine, QUOTE_FORMAT_VERSION};

/// The first bytes of every encoded quote.
pub const MAGIC: &[u8; 3] = b"EPQ";

/// Why bytes are not a canonical quote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not a quote (bad magic)")]
    Magic,
    #[error("quote format version {0} is not supported")]
    Version(u8),
    #[error("truncated")]
    Truncated,
    #[error("{0} bytes after the end")]
    Trailing(usize),
    #[error("bad {0}")]
    Field(&'static str),
}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn len(&mut self, n: usize) {
        // Strings and lists in a quote are far below 4 GiB (the evaluator bounds them).
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }
    fn str(&mut self, s: &str) {
        self.len(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            None => self.u8(0),
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
        }
    }
}

/// Encodes a quote canonically.
pub fn encode(quote: &Quote) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(256 + quote.lines.len() * 96));
    w.0.extend_from_slice(MAGIC);
    w.u8(QUOTE_FORMAT_VERSION);
    w.u64(quote.snapshot_version);
    w.u64(quote.promotions_version);
    w.u32(quote.policy_version);
    w.0.extend_from_slice(quote.currency.as_str().as_bytes());
    w.str(quote.store.as_str());
    w.str(quote.channel.as_str());
    w.str(quote.segment.as_str());
    w.opt_str(quote.customer_id.as_deref());
    w.i64(quote.issued_at_ms);
    w.i64(quote.expires_at_ms);
    w.len(quote.lines.len());
    for line in &quote.lines {
        w.str(line.sku.as_str());
        w.u32(line.quantity);
        w.i64(line.unit_list_price_minor);
        w.i64(line.unit_price_minor);
        w.i64(line.total_minor);
        w.len(line.discounts.len());
        for discount in &line.discounts {
            w.str(&discount.promotion_id);
            w.i64(discount.amount_minor);
        }
    }
    for v in totals_fields(&quote.totals) {
        w.i64(v);
    }
    w.opt_str(quote.shipping_promotion_id.as_deref());
    w.len(quote.coupons.len());
    for coupon in &quote.coupons {
        w.str(&coupon.code);
        w.str(&coupon.promotion_id);
    }
    w.0
}

fn totals_fields(t: &Totals) -> [i64; 10] {
    [
        t.list_minor,
        t.subtotal_minor,
        t.item_discount_minor,
        t.cart_discount_minor,
        t.discount_minor,
        t.merchandise_minor,
        t.shipping_fee_minor,
        t.shipping_discount_minor,
        t.shipping_minor,
        t.total_minor,
    ]
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array()?))
    }
    /// A list length, checked against the bytes left (each item takes at least
    /// `min_item` bytes) so a forged count cannot make us allocate.
    fn count(&mut self, min_item: usize) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item) > self.0.len() {
            return Err(DecodeError::Truncated);
        }
        Ok(n)
    }
    fn str(&mut self, field: &'static str) -> Result<&'a str, DecodeError> {
        let n = self.count(1)?;
        std::str::from_utf8(self.take(n)?).map_err(|_| DecodeError::Field(field))
    }
    fn opt_str(&mut self, field: &'static str) -> Result<Option<&'a str>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.str(field)?)),
            _ => Err(DecodeError::Field(field)),
        }
    }
    fn dimension(&mut self, field: &'static str) -> Result<Dimension, DecodeError> {
        Dimension::new(self.str(field)?).map_err(|_| DecodeError::Field(field))
    }
}

/// Decodes a canonical quote.
pub fn decode(bytes: &[u8]) -> Result<Quote, DecodeError> {
    let mut r = Reader(bytes);
    if r.take(MAGIC.len()).map_err(|_| DecodeError::Magic)? != MAGIC {
        return Err(DecodeError::Magic);
    }
    let version = r.u8()?;
    if version != QUOTE_FORMAT_VERSION {
        return Err(DecodeError::Version(version));
    }
    let snapshot_version = r.u64()?;
    let promotions_version = r.u64()?;
    let policy_version = r.u32()?;
    let currency = std::str::from_utf8(r.take(3)?)
        .ok()
        .and_then(|code| Currency::parse(code).ok())
        .ok_or(DecodeError::Field("currency"))?;
    let store = r.dimension("store")?;
    let channel = r.dimension("channel")?;
    let segment = r.dimension("segment")?;
    let customer_id = r.opt_str("customer_id")?.map(str::to_owned);
    let issued_at_ms = r.i64()?;
    let expires_at_ms = r.i64()?;
    // A line takes at least 4 + 4 + 3 × 8 + 4 bytes.
    let line_count = r.count(36)?;
    let mut lines = Vec::with_capacity(line_count);
    for _ in 0..line_count {
        let sku = Sku::new(r.str("sku")?).map_err(|_| DecodeError::Field("sku"))?;
        let quantity = r.u32()?;
        let unit_list_price_minor = r.i64()?;
        let unit_price_minor = r.i64()?;
        let total_minor = r.i64()?;
        let discount_count = r.count(12)?;
        let mut discounts = Vec::with_capacity(discount_count);
        for _ in 0..discount_count {
            let promotion_id = r.str("promotion_id")?.to_owned();
            let amount_minor = r.i64()?;
            discounts.push(QuoteDiscount {
                promotion_id,
                amount_minor,
            });
        }
        lines.push(QuoteLine {
            sku,
            quantity,
            unit_list_price_minor,
            unit_price_minor,
            discounts,
            total_minor,
        });
    }
    let mut t = [0i64; 10];
    for v in &mut t {
        *v = r.i64()?;
    }
    let totals = Totals {
        list_minor: t[0],
        subtotal_minor: t[1],
        item_discount_minor: t[2],
        cart_discount_minor: t[3],
        discount_minor: t[4],
        merchandise_minor: t[5],
        shipping_fee_minor: t[6],
        shipping_discount_minor: t[7],
        shipping_minor: t[8],
        total_minor: t[9],
    };
    let shipping_promotion_id = r.opt_str("shipping_promotion_id")?.map(str::to_owned);
    let coupon_count = r.count(8)?;
    let mut coupons = Vec::with_capacity(coupon_count);
    for _ in 0..coupon_count {
        coupons.push(QuoteCoupon {
            code: r.str("coupon code")?.to_owned(),
            promotion_id: r.str("promotion_id")?.to_owned(),
        });
    }
    if !r.0.is_empty() {
        return Err(DecodeError::Trailing(r.0.len()));
    }
    Ok(Quote {
        snapshot_version,
        promotions_version,
        policy_version,
        currency,
        store,
        channel,
        segment,
        customer_id,
        issued_at_ms,
        expires_at_ms,
        lines,
        totals,
        shipping_promotion_id,
        coupons,
    })
}
