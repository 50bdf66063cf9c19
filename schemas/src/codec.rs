//! Encoding and decoding of snapshots and deltas.
//!
//! Snapshots are finished with the file identifier `EPSN`, deltas with `EPDL`, so a
//! body or file of the wrong kind is rejected with a clear error instead of being
//! misread. Decoding verifies the buffer (flatbuffers verifier, sized for snapshots
//! of many millions of entries) and validates every key and price.
//!
//! A snapshot may carry a promotions document ([`PromotionsDoc`], JSON in the
//! `promotions_json` field): the promotion definitions, their stacking policy, the SKUs'
//! categories and the stores' time zones. A delta that carries one replaces the whole
//! document; a delta without one leaves it unchanged. Decoding checks every definition
//! and the policy (cheap checks; the edge compiles the set on its writer thread).

use edgeprice_pricing::promo::{Promotion, PromotionError, StackingPolicy};
use edgeprice_pricing::{
    Currency, Dimension, EntryError, KeyError, MoneyError, PriceEntry, PriceKey, PromotionTag, Sku,
};
use flatbuffers::{FlatBufferBuilder, InvalidFlatbuffer, VerifierOptions, WIPOffset};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use crate::fb;

/// File identifier of a full snapshot.
pub const SNAPSHOT_ID: &str = "EPSN";
/// File identifier of a snapshot delta.
pub const DELTA_ID: &str = "EPDL";

/// Why a buffer could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a {expected} (file identifier mismatch)")]
    WrongKind { expected: &'static str },
    #[error("malformed flatbuffer: {0}")]
    Malformed(#[from] InvalidFlatbuffer),
    #[error("entry {index}: {source}")]
    Key { index: usize, source: KeyError },
    #[error("entry {index}: {source}")]
    Currency { index: usize, source: MoneyError },
    #[error("entry {index}: {source}")]
    Entry { index: usize, source: EntryError },
    #[error("invalid promotions: {0}")]
    Promotions(String),
    #[error("malformed flatbuffer: {what} (at byte {at})")]
    Layout { what: &'static str, at: usize },
}

/// The promotions a snapshot carries, as the control plane publishes them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PromotionsDoc {
    /// Promotions version; quotes carry it.
    pub version: u64,
    /// The stacking policy.
    #[serde(default)]
    pub policy: StackingPolicy,
    pub promotions: Vec<Promotion>,
    /// SKU → category, for category-targeted promotions.
    #[serde(default)]
    pub categories: BTreeMap<String, String>,
    /// Time zone (IANA name) of stores not listed in `store_time_zones`; UTC when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Store → IANA time zone, for recurring promotion windows.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub store_time_zones: BTreeMap<String, String>,
    /// Shipping fee of a cart before free-shipping promotions, minor units.
    #[serde(default)]
    pub shipping_fee_minor: i64,
}

impl PromotionsDoc {
    /// Parses and checks a document: every definition, the policy, unique ids, known
    /// time zones. Compiling the set can still find nothing more than these checks do.
    pub fn parse(json: &str) -> Result<PromotionsDoc, DecodeError> {
        let doc: PromotionsDoc = serde_json::from_str(json)
            .map_err(|err| DecodeError::Promotions(format!("malformed document: {err}")))?;
        doc.validate()?;
        Ok(doc)
    }

    /// The checks [`PromotionsDoc::parse`] makes.
    pub fn validate(&self) -> Result<(), DecodeError> {
        let invalid = |err: PromotionError| DecodeError::Promotions(err.to_string());
        self.policy.validate().map_err(invalid)?;
        let mut ids = HashSet::with_capacity(self.promotions.len());
        for promotion in &self.promotions {
            promotion.validate().map_err(invalid)?;
            if !ids.insert(promotion.id.as_str()) {
                return Err(invalid(PromotionError::DuplicateId(promotion.id.clone())));
            }
        }
        for zone in self.time_zone.iter().chain(self.store_time_zones.values()) {
            zone.parse::<chrono_tz::Tz>()
                .map_err(|_| DecodeError::Promotions(format!("unknown time zone {zone:?}")))?;
        }
        if !(0..=edgeprice_pricing::promo::MAX_UNIT_PRICE_MINOR).contains(&self.shipping_fee_minor)
        {
            return Err(DecodeError::Promotions(format!(
                "shipping fee {} is out of range",
                self.shipping_fee_minor
            )));
        }
        Ok(())
    }

    /// The document as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a promotions document always serialises")
    }
}

/// A decoded full snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotData {
    pub version: u64,
    pub created_at_ms: i64,
    pub entries: Vec<PriceEntry>,
    /// The promotions document; `None` = no promotions.
    pub promotions: Option<Arc<PromotionsDoc>>,
}

/// A decoded delta: the changes that turn `base_version` into `version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaData {
    pub base_version: u64,
    pub version: u64,
    pub created_at_ms: i64,
    pub upserts: Vec<PriceEntry>,
    pub removals: Vec<PriceKey>,
    /// A promotions document replacing the current one; `None` = unchanged.
    pub promotions: Option<Arc<PromotionsDoc>>,
}

/// A price key borrowed from a decoded buffer or from a [`PriceKey`]; `*` where a
/// dimension is any. Valid (checked when the buffer was parsed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRef<'a> {
    pub sku: &'a str,
    pub store: &'a str,
    pub channel: &'a str,
    pub segment: &'a str,
}

impl<'a> KeyRef<'a> {
    pub fn of(key: &'a PriceKey) -> KeyRef<'a> {
        KeyRef {
            sku: key.sku.as_str(),
            store: key.store.as_str(),
            channel: key.channel.as_str(),
            segment: key.segment.as_str(),
        }
    }
}

/// A promotion tag borrowed like [`EntryRef`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PromotionRef<'a> {
    pub id: &'a str,
    pub label: &'a str,
    pub price_minor: i64,
    pub starts_at_ms: i64,
    pub ends_at_ms: i64,
}

/// A price entry borrowed from a decoded buffer or from a [`PriceEntry`]: what the
/// edge builds its table from without copying strings it does not keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryRef<'a> {
    pub key: KeyRef<'a>,
    pub currency: Currency,
    pub list_price_minor: i64,
    pub price_minor: i64,
    pub floor_minor: i64,
    pub promotion: Option<PromotionRef<'a>>,
    pub valid_from_ms: Option<i64>,
    pub valid_until_ms: Option<i64>,
    pub revision: u64,
}

impl<'a> EntryRef<'a> {
    pub fn of(e: &'a PriceEntry) -> EntryRef<'a> {
        EntryRef {
            key: KeyRef::of(&e.key),
            currency: e.currency,
            list_price_minor: e.list_price_minor,
            price_minor: e.price_minor,
            floor_minor: e.floor_minor,
            promotion: e.promotion.as_ref().map(|p| PromotionRef {
                id: &p.id,
                label: &p.label,
                price_minor: p.price_minor,
                starts_at_ms: p.starts_at_ms,
                ends_at_ms: p.ends_at_ms,
            }),
            valid_from_ms: e.valid_from_ms,
            valid_until_ms: e.valid_until_ms,
            revision: e.revision,
        }
    }
}

/// A delta read in place: the buffer is checked and every entry and key validated when
/// it is parsed, and the entries keep borrowing their strings from it (no `String` per
/// key, no intermediate `DeltaData`). This is how the edge applies a delta it receives.
/// What parsing read is kept (about 200 bytes per entry), so applying it does not read
/// the buffer a second time (that second pass was a quarter of the edge's CPU per
/// 10,000-entry delta).
///
/// Parsing reads the buffer with [`Tables`], a bounds-checked reader of this schema's
/// tables that makes the flatbuffers verifier's checks as it goes (ranges, alignment,
/// required fields, NUL-terminated UTF-8 strings) instead of a separate pass over every
/// table (the verifier alone took 2.4 ms of a 10,000-entry delta). It accepts what
/// [`decode_delta`] accepts, which is what the delta log replays on restart.
#[derive(Debug, Clone)]
pub struct DeltaView<'a> {
    pub base_version: u64,
    pub version: u64,
    pub created_at_ms: i64,
    /// A promotions document replacing the current one; `None` = unchanged.
    pub promotions: Option<Arc<PromotionsDoc>>,
    upserts: Vec<EntryRef<'a>>,
    removals: Vec<KeyRef<'a>>,
}

impl<'a> DeltaView<'a> {
    /// Checks and validates an encoded delta (the same checks as [`decode_delta`]).
    pub fn parse(buf: &'a [u8]) -> Result<DeltaView<'a>, DecodeError> {
        let root = root_table(buf, DELTA_ID, "snapshot delta")?;
        let tables = root.tables;
        let (upserts, removals) = (root.vector(3)?, root.vector(4)?);
        let mut view = DeltaView {
            base_version: root.u64(0)?,
            version: root.u64(1)?,
            created_at_ms: root.i64(2)?,
            promotions: read_promotions(root.str(5)?)?,
            // Reserved from the counts only as far as the buffer can hold that many
            // distinct entries: a damaged count must get its error, not a huge allocation.
            upserts: Vec::with_capacity(upserts.len.min(buf.len() / 64)),
            removals: Vec::with_capacity(removals.len.min(buf.len() / 32)),
        };
        // The quick checks find nothing in a good delta; on a bad entry the full
        // decode of it reports the same error `decode_delta` would.
        let mut currencies = CurrencyCache::default();
        for index in 0..upserts.len {
            let e = tables.element(upserts, index)?;
            match read_entry_at(e, index, &mut currencies) {
                Ok(entry) if validate_key_ref(&entry.key).is_ok() && entry_ref_is_valid(&entry) => {
                    view.upserts.push(entry)
                }
                Ok(_) | Err(DecodeError::Currency { .. }) => {
                    return Err(full_entry_error(buf, index))
                }
                Err(err) => return Err(err),
            }
        }
        for index in 0..removals.len {
            let key = read_key_at(tables.element(removals, index)?)?;
            validate_key_ref(&key).map_err(|source| DecodeError::Key { index, source })?;
            view.removals.push(key);
        }
        Ok(view)
    }

    /// The upserted entries, in delta order.
    pub fn upserts(&self) -> impl ExactSizeIterator<Item = EntryRef<'a>> + '_ {
        self.upserts.iter().copied()
    }

    /// The removed keys, in delta order.
    pub fn removals(&self) -> impl ExactSizeIterator<Item = KeyRef<'a>> + '_ {
        self.removals.iter().copied()
    }
}

/// How many changes (upserts plus removals) an encoded delta carries, read from its two
/// vector headers without looking at the entries: what an edge checks against its limit
/// before it queues a delta. A vector element costs 4 bytes on the wire but a few
/// hundred to apply, and elements may share one entry table, so an upload's byte size
/// does not bound the work; its change count does.
pub fn delta_change_count(buf: &[u8]) -> Result<usize, DecodeError> {
    let root = root_table(buf, DELTA_ID, "snapshot delta")?;
    Ok(root.vector(3)?.len + root.vector(4)?.len)
}

/// How many entries an encoded full snapshot carries, read from its vector header, for
/// the same reason as [`delta_change_count`].
pub fn snapshot_entry_count(buf: &[u8]) -> Result<usize, DecodeError> {
    Ok(root_table(buf, SNAPSHOT_ID, "snapshot")?.vector(2)?.len)
}

/// The root table of a buffer with file identifier `id` (`expected` names the kind).
fn root_table<'a>(
    buf: &'a [u8],
    id: &str,
    expected: &'static str,
) -> Result<TableAt<'a>, DecodeError> {
    if !has_identifier(buf, id) {
        return Err(DecodeError::WrongKind { expected });
    }
    let tables = Tables(buf);
    Ok(tables.table(tables.uoffset(0)?)?)
}

/// The error `decode_delta` gives for upsert `index` (which a quick check refused).
fn full_entry_error(buf: &[u8], index: usize) -> DecodeError {
    let decoded = flatbuffers::root_with_opts::<fb::SnapshotDelta>(&verifier_options(), buf)
        .map_err(DecodeError::from)
        .and_then(|root| {
            let e = root.upserts().expect("checked").get(index);
            read_entry(index, e)
        });
    match decoded {
        Err(err) => err,
        Ok(_) => DecodeError::Layout {
            what: "entry the flatbuffers verifier accepts but the reader refused",
            at: index,
        },
    }
}

/// A vector of tables: where its first element's offset is, and how many.
#[derive(Debug, Clone, Copy, Default)]
struct TableVector {
    at: usize,
    len: usize,
}

/// A bounds-checked reader of flatbuffers tables: every read of a scalar, offset,
/// string or vector checks what the flatbuffers verifier checks for it.
#[derive(Debug, Clone, Copy)]
struct Tables<'a>(&'a [u8]);

/// A table found in [`Tables`]: its position and its vtable's.
#[derive(Debug, Clone, Copy)]
struct TableAt<'a> {
    tables: Tables<'a>,
    at: usize,
    vtable: usize,
    vtable_len: usize,
}

/// What the reader found wrong, and where (kept small: reads return it a lot).
#[derive(Debug, Clone, Copy)]
struct Bad {
    what: &'static str,
    at: usize,
}

impl From<Bad> for DecodeError {
    fn from(bad: Bad) -> DecodeError {
        DecodeError::Layout {
            what: bad.what,
            at: bad.at,
        }
    }
}

fn layout(what: &'static str, at: usize) -> Bad {
    Bad { what, at }
}

impl<'a> Tables<'a> {
    /// `N` bytes at `at`, which must be aligned to `N` (scalars are aligned to their
    /// size, relative to the start of the buffer).
    #[inline]
    fn bytes<const N: usize>(self, at: usize) -> Result<[u8; N], Bad> {
        if at % N != 0 {
            return Err(layout("unaligned scalar", at));
        }
        at.checked_add(N)
            .and_then(|end| self.0.get(at..end))
            .map(|b| b.try_into().expect("N bytes"))
            .ok_or_else(|| layout("scalar out of the buffer", at))
    }

    #[inline]
    fn u16(self, at: usize) -> Result<u16, Bad> {
        self.bytes(at).map(u16::from_le_bytes)
    }

    #[inline]
    fn u32(self, at: usize) -> Result<u32, Bad> {
        self.bytes(at).map(u32::from_le_bytes)
    }

    /// Follows the unsigned offset stored at `at`.
    #[inline]
    fn uoffset(self, at: usize) -> Result<usize, Bad> {
        let offset = self.u32(at)? as usize;
        at.checked_add(offset)
            .filter(|&to| to < self.0.len())
            .ok_or_else(|| layout("offset out of the buffer", at))
    }

    #[inline]
    fn table(self, at: usize) -> Result<TableAt<'a>, Bad> {
        let soffset = i32::from_le_bytes(self.bytes(at)?) as i64;
        let vtable = usize::try_from(at as i64 - soffset)
            .map_err(|_| layout("vtable out of the buffer", at))?;
        let vtable_len = self.u16(vtable)? as usize;
        let table_len = self.u16(vtable + 2)? as usize;
        if vtable_len < 4 || vtable_len % 2 != 0 || vtable + vtable_len > self.0.len() {
            return Err(layout("malformed vtable", vtable));
        }
        if at + table_len > self.0.len() {
            return Err(layout("table out of the buffer", at));
        }
        Ok(TableAt {
            tables: self,
            at,
            vtable,
            vtable_len,
        })
    }

    /// Element `index` of a vector of tables.
    #[inline]
    fn element(self, vector: TableVector, index: usize) -> Result<TableAt<'a>, Bad> {
        debug_assert!(index < vector.len);
        self.table(self.uoffset(vector.at + 4 * index)?)
    }

    /// The string whose length is at `at`: in range, NUL-terminated, UTF-8.
    #[inline]
    fn string(self, at: usize) -> Result<&'a str, Bad> {
        let len = self.u32(at)? as usize;
        let start = at + 4;
        let bytes = start
            .checked_add(len)
            .filter(|&end| end < self.0.len() && self.0[end] == 0)
            .map(|end| &self.0[start..end])
            .ok_or_else(|| layout("string out of the buffer or not terminated", at))?;
        std::str::from_utf8(bytes).map_err(|_| layout("string is not UTF-8", at))
    }
}

impl<'a> TableAt<'a> {
    /// Where field `id` is, if present.
    #[inline]
    fn field(&self, id: usize) -> Result<Option<usize>, Bad> {
        let slot = 4 + 2 * id;
        if slot >= self.vtable_len {
            return Ok(None);
        }
        let offset = self.tables.u16(self.vtable + slot)? as usize;
        Ok((offset != 0).then_some(self.at + offset))
    }

    #[inline]
    fn i64(&self, id: usize) -> Result<i64, Bad> {
        match self.field(id)? {
            Some(at) => self.tables.bytes(at).map(i64::from_le_bytes),
            None => Ok(0),
        }
    }

    #[inline]
    fn u64(&self, id: usize) -> Result<u64, Bad> {
        match self.field(id)? {
            Some(at) => self.tables.bytes(at).map(u64::from_le_bytes),
            None => Ok(0),
        }
    }

    #[inline]
    fn str(&self, id: usize) -> Result<Option<&'a str>, Bad> {
        match self.field(id)? {
            Some(at) => Ok(Some(self.tables.string(self.tables.uoffset(at)?)?)),
            None => Ok(None),
        }
    }

    #[inline]
    fn required_str(&self, id: usize, what: &'static str) -> Result<&'a str, Bad> {
        self.str(id)?.ok_or_else(|| layout(what, self.at))
    }

    #[inline]
    fn table(&self, id: usize) -> Result<Option<TableAt<'a>>, Bad> {
        match self.field(id)? {
            Some(at) => Ok(Some(self.tables.table(self.tables.uoffset(at)?)?)),
            None => Ok(None),
        }
    }

    #[inline]
    fn vector(&self, id: usize) -> Result<TableVector, Bad> {
        let Some(at) = self.field(id)? else {
            return Ok(TableVector::default());
        };
        let at = self.tables.uoffset(at)?;
        let len = self.tables.u32(at)? as usize;
        len.checked_mul(4)
            .and_then(|bytes| bytes.checked_add(at + 4))
            .filter(|&end| end <= self.tables.0.len())
            .ok_or_else(|| layout("vector out of the buffer", at))?;
        Ok(TableVector { at: at + 4, len })
    }
}

// Field ids of `fbs/price.fbs`, in declaration order.
const KEY_SKU: usize = 0;
const KEY_STORE: usize = 1;
const KEY_CHANNEL: usize = 2;
const KEY_SEGMENT: usize = 3;
const ENTRY_KEY: usize = 0;
const ENTRY_CURRENCY: usize = 1;
const ENTRY_LIST_PRICE: usize = 2;
const ENTRY_PRICE: usize = 3;
const ENTRY_FLOOR: usize = 4;
const ENTRY_PROMOTION: usize = 5;
const ENTRY_VALID_FROM: usize = 6;
const ENTRY_VALID_UNTIL: usize = 7;
const ENTRY_REVISION: usize = 8;
const PROMOTION_ID: usize = 0;
const PROMOTION_LABEL: usize = 1;
const PROMOTION_PRICE: usize = 2;
const PROMOTION_STARTS: usize = 3;
const PROMOTION_ENDS: usize = 4;

fn read_key_at<'a>(k: TableAt<'a>) -> Result<KeyRef<'a>, Bad> {
    Ok(KeyRef {
        sku: k.required_str(KEY_SKU, "key without a sku")?,
        store: read_dim_ref(k.str(KEY_STORE)?),
        channel: read_dim_ref(k.str(KEY_CHANNEL)?),
        segment: read_dim_ref(k.str(KEY_SEGMENT)?),
    })
}

fn read_entry_at<'a>(
    e: TableAt<'a>,
    index: usize,
    currencies: &mut CurrencyCache,
) -> Result<EntryRef<'a>, DecodeError> {
    let key = e
        .table(ENTRY_KEY)?
        .ok_or_else(|| layout("entry without a key", e.at))?;
    let key = read_key_at(key)?;
    let currency = currencies
        .parse(e.required_str(ENTRY_CURRENCY, "entry without a currency")?)
        .map_err(|source| DecodeError::Currency { index, source })?;
    let promotion = match e.table(ENTRY_PROMOTION)? {
        Some(p) => Some(PromotionRef {
            id: p.required_str(PROMOTION_ID, "promotion without an id")?,
            label: p.str(PROMOTION_LABEL)?.unwrap_or_default(),
            price_minor: p.i64(PROMOTION_PRICE)?,
            starts_at_ms: p.i64(PROMOTION_STARTS)?,
            ends_at_ms: p.i64(PROMOTION_ENDS)?,
        }),
        None => None,
    };
    let valid_from_ms = e.i64(ENTRY_VALID_FROM)?;
    let valid_until_ms = e.i64(ENTRY_VALID_UNTIL)?;
    Ok(EntryRef {
        key,
        currency,
        list_price_minor: e.i64(ENTRY_LIST_PRICE)?,
        price_minor: e.i64(ENTRY_PRICE)?,
        floor_minor: e.i64(ENTRY_FLOOR)?,
        promotion,
        valid_from_ms: (valid_from_ms != 0).then_some(valid_from_ms),
        valid_until_ms: (valid_until_ms != 0).then_some(valid_until_ms),
        revision: e.u64(ENTRY_REVISION)?,
    })
}

/// Currencies are shared strings in an encoded buffer: a repeat is the same bytes at
/// the same place, so the table lookup runs once per distinct code.
#[derive(Default)]
struct CurrencyCache {
    last: Option<(*const u8, Currency)>,
}

impl CurrencyCache {
    fn parse(&mut self, code: &str) -> Result<Currency, MoneyError> {
        if let Some((at, currency)) = self.last {
            if std::ptr::eq(at, code.as_ptr()) && code.len() == 3 {
                return Ok(currency);
            }
        }
        let currency = Currency::parse(code)?;
        self.last = Some((code.as_ptr(), currency));
        Ok(currency)
    }
}

fn validate_key_ref(k: &KeyRef<'_>) -> Result<(), KeyError> {
    edgeprice_pricing::key::validate("sku", k.sku)?;
    for dim in [k.store, k.channel, k.segment] {
        if dim != edgeprice_pricing::ANY {
            edgeprice_pricing::key::validate("dimension", dim)?;
        }
    }
    Ok(())
}

fn read_dim_ref(value: Option<&str>) -> &str {
    match value {
        None | Some("") => edgeprice_pricing::ANY,
        Some(v) => v,
    }
}

/// The checks of [`PriceEntry::validate`] on a borrowed entry.
fn entry_ref_is_valid(e: &EntryRef<'_>) -> bool {
    let window_ok = match (e.valid_from_ms, e.valid_until_ms) {
        (Some(from), Some(until)) => until > from,
        _ => true,
    };
    let promotion_ok = e
        .promotion
        .is_none_or(|p| p.price_minor >= 0 && p.ends_at_ms > p.starts_at_ms);
    e.list_price_minor >= 0
        && e.price_minor >= 0
        && e.floor_minor >= 0
        && e.price_minor >= e.floor_minor
        && window_ok
        && promotion_ok
}

/// Whether `buf` carries file identifier `id`. `flatbuffers::buffer_has_identifier`
/// panics on buffers shorter than 8 bytes (a body of a few bytes stopped the edge's
/// writer thread); such buffers have no identifier.
fn has_identifier(buf: &[u8], id: &str) -> bool {
    buf.len() >= 8 && flatbuffers::buffer_has_identifier(buf, id, false)
}

fn verifier_options() -> VerifierOptions {
    VerifierOptions {
        max_depth: 64,
        // A 10M-entry snapshot has ~30M tables; the defaults (1M) are for small messages.
        max_tables: usize::MAX,
        max_apparent_size: usize::MAX,
        ignore_missing_null_terminator: false,
    }
}

/// Encodes a full snapshot.
pub fn encode_snapshot(snapshot: &SnapshotData) -> Vec<u8> {
    encode_snapshot_parts(
        snapshot.version,
        snapshot.created_at_ms,
        snapshot.entries.iter(),
        snapshot.promotions.as_deref(),
    )
}

/// Encodes a full snapshot from any iterator of entries (the edge persists its
/// in-memory table this way without building a `Vec` first).
pub fn encode_snapshot_parts<'e>(
    version: u64,
    created_at_ms: i64,
    entries: impl ExactSizeIterator<Item = &'e PriceEntry>,
    promotions: Option<&PromotionsDoc>,
) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(entries.len() * 96 + 1024);
    let offsets: Vec<_> = entries.map(|e| write_entry(&mut fbb, e)).collect();
    let entries = fbb.create_vector(&offsets);
    let promotions_json = promotions.map(|doc| fbb.create_string(&doc.to_json()));
    let root = fb::Snapshot::create(
        &mut fbb,
        &fb::SnapshotArgs {
            version,
            created_at_ms,
            entries: Some(entries),
            promotions_json,
        },
    );
    fbb.finish(root, Some(SNAPSHOT_ID));
    fbb.finished_data().to_vec()
}

/// Encodes a delta.
pub fn encode_delta(delta: &DeltaData) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(delta.upserts.len() * 96 + 1024);
    let upserts: Vec<_> = delta
        .upserts
        .iter()
        .map(|e| write_entry(&mut fbb, e))
        .collect();
    let upserts = fbb.create_vector(&upserts);
    let removals: Vec<_> = delta
        .removals
        .iter()
        .map(|k| write_key(&mut fbb, k))
        .collect();
    let removals = fbb.create_vector(&removals);
    let promotions_json = delta
        .promotions
        .as_deref()
        .map(|doc| fbb.create_string(&doc.to_json()));
    let root = fb::SnapshotDelta::create(
        &mut fbb,
        &fb::SnapshotDeltaArgs {
            base_version: delta.base_version,
            version: delta.version,
            created_at_ms: delta.created_at_ms,
            upserts: Some(upserts),
            removals: Some(removals),
            promotions_json,
        },
    );
    fbb.finish(root, Some(DELTA_ID));
    fbb.finished_data().to_vec()
}

/// Decodes and validates a full snapshot.
pub fn decode_snapshot(buf: &[u8]) -> Result<SnapshotData, DecodeError> {
    if !has_identifier(buf, SNAPSHOT_ID) {
        return Err(DecodeError::WrongKind {
            expected: "snapshot",
        });
    }
    let root = flatbuffers::root_with_opts::<fb::Snapshot>(&verifier_options(), buf)?;
    let entries = match root.entries() {
        Some(list) => list
            .iter()
            .enumerate()
            .map(|(i, e)| read_entry(i, e))
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    Ok(SnapshotData {
        version: root.version(),
        created_at_ms: root.created_at_ms(),
        entries,
        promotions: read_promotions(root.promotions_json())?,
    })
}

/// Decodes and validates a delta.
pub fn decode_delta(buf: &[u8]) -> Result<DeltaData, DecodeError> {
    if !has_identifier(buf, DELTA_ID) {
        return Err(DecodeError::WrongKind {
            expected: "snapshot delta",
        });
    }
    let root = flatbuffers::root_with_opts::<fb::SnapshotDelta>(&verifier_options(), buf)?;
    let upserts = match root.upserts() {
        Some(list) => list
            .iter()
            .enumerate()
            .map(|(i, e)| read_entry(i, e))
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    let removals = match root.removals() {
        Some(list) => list
            .iter()
            .enumerate()
            .map(|(index, k)| read_key(k).map_err(|source| DecodeError::Key { index, source }))
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    Ok(DeltaData {
        base_version: root.base_version(),
        version: root.version(),
        created_at_ms: root.created_at_ms(),
        upserts,
        removals,
        promotions: read_promotions(root.promotions_json())?,
    })
}

fn read_promotions(json: Option<&str>) -> Result<Option<Arc<PromotionsDoc>>, DecodeError> {
    json.map(|json| PromotionsDoc::parse(json).map(Arc::new))
        .transpose()
}

fn dim_str(d: &Dimension) -> Option<&str> {
    (!d.is_any()).then(|| d.as_str())
}

fn write_key<'b>(fbb: &mut FlatBufferBuilder<'b>, key: &PriceKey) -> WIPOffset<fb::PriceKey<'b>> {
    let sku = fbb.create_string(key.sku.as_str());
    // Stores, channels and segments repeat across millions of entries: share them.
    let store = dim_str(&key.store).map(|s| fbb.create_shared_string(s));
    let channel = dim_str(&key.channel).map(|s| fbb.create_shared_string(s));
    let segment = dim_str(&key.segment).map(|s| fbb.create_shared_string(s));
    fb::PriceKey::create(
        fbb,
        &fb::PriceKeyArgs {
            sku: Some(sku),
            store,
            channel,
            segment,
        },
    )
}

fn write_entry<'b>(
    fbb: &mut FlatBufferBuilder<'b>,
    e: &PriceEntry,
) -> WIPOffset<fb::PriceEntry<'b>> {
    let key = write_key(fbb, &e.key);
    let currency = fbb.create_shared_string(e.currency.as_str());
    let promotion = e.promotion.as_ref().map(|p| {
        let id = fbb.create_string(&p.id);
        let label = fbb.create_shared_string(&p.label);
        fb::Promotion::create(
            fbb,
            &fb::PromotionArgs {
                id: Some(id),
                label: Some(label),
                price_minor: p.price_minor,
                starts_at_ms: p.starts_at_ms,
                ends_at_ms: p.ends_at_ms,
            },
        )
    });
    fb::PriceEntry::create(
        fbb,
        &fb::PriceEntryArgs {
            key: Some(key),
            currency: Some(currency),
            list_price_minor: e.list_price_minor,
            price_minor: e.price_minor,
            floor_minor: e.floor_minor,
            promotion,
            valid_from_ms: e.valid_from_ms.unwrap_or(0),
            valid_until_ms: e.valid_until_ms.unwrap_or(0),
            revision: e.revision,
        },
    )
}

fn read_dim(value: Option<&str>) -> Result<Dimension, KeyError> {
    match value {
        None | Some("") => Ok(Dimension::any()),
        Some(v) => Dimension::new(v),
    }
}

fn read_key(k: fb::PriceKey<'_>) -> Result<PriceKey, KeyError> {
    Ok(PriceKey {
        sku: Sku::new(k.sku())?,
        store: read_dim(k.store())?,
        channel: read_dim(k.channel())?,
        segment: read_dim(k.segment())?,
    })
}

fn read_entry(index: usize, e: fb::PriceEntry<'_>) -> Result<PriceEntry, DecodeError> {
    let key = read_key(e.key()).map_err(|source| DecodeError::Key { index, source })?;
    let currency =
        Currency::parse(e.currency()).map_err(|source| DecodeError::Currency { index, source })?;
    let entry = PriceEntry {
        key,
        currency,
        list_price_minor: e.list_price_minor(),
        price_minor: e.price_minor(),
        floor_minor: e.floor_minor(),
        promotion: e.promotion().map(|p| PromotionTag {
            id: p.id().to_owned(),
            label: p.label().unwrap_or_default().to_owned(),
            price_minor: p.price_minor(),
            starts_at_ms: p.starts_at_ms(),
            ends_at_ms: p.ends_at_ms(),
        }),
        valid_from_ms: (e.valid_from_ms() != 0).then_some(e.valid_from_ms()),
        valid_until_ms: (e.valid_until_ms() != 0).then_some(e.valid_until_ms()),
        revision: e.revision(),
    };
    entry
        .validate()
        .map_err(|source| DecodeError::Entry { index, source })?;
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(sku: &str, store: &str, price: i64, promo: bool) -> PriceEntry {
        PriceEntry {
            key: PriceKey {
                sku: Sku::new(sku).unwrap(),
                store: Dimension::new(store).unwrap(),
                channel: Dimension::any(),
                segment: Dimension::new("gold").unwrap(),
            },
            currency: Currency::EUR,
            list_price_minor: price + 100,
            price_minor: price,
            floor_minor: price / 2,
            promotion: promo.then(|| PromotionTag {
                id: "flash-1".into(),
                label: "Flash \"sale\" −20%".into(),
                price_minor: price - 10,
                starts_at_ms: 1_000,
                ends_at_ms: 2_000,
            }),
            valid_from_ms: Some(5),
            valid_until_ms: None,
            revision: 7,
        }
    }

    #[test]
    fn snapshot_round_trips() {
        let data = SnapshotData {
            version: 42,
            created_at_ms: 1_700_000_000_000,
            promotions: None,
            entries: vec![entry("A", "*", 1000, true), entry("B", "s1", 250, false)],
        };
        let buf = encode_snapshot(&data);
        assert_eq!(decode_snapshot(&buf).unwrap(), data);
    }

    #[test]
    fn delta_round_trips() {
        let data = DeltaData {
            base_version: 1,
            version: 2,
            created_at_ms: 9,
            promotions: None,
            upserts: vec![entry("A", "s2", 10, true)],
            removals: vec![PriceKey::chain_wide(Sku::new("B").unwrap())],
        };
        let buf = encode_delta(&data);
        assert_eq!(decode_delta(&buf).unwrap(), data);
    }

    fn doc(basis_points: u32) -> Arc<PromotionsDoc> {
        let mut doc = PromotionsDoc {
            version: 3,
            promotions: edgeprice_pricing::promo::synthetic::promotions(5, 20),
            ..PromotionsDoc::default()
        };
        doc.categories.insert("A".into(), "cat-1".into());
        if let edgeprice_pricing::promo::Rule::PercentOff { basis_points: bp } =
            &mut doc.promotions[0].rule
        {
            *bp = basis_points;
        } else {
            doc.promotions[0].rule = edgeprice_pricing::promo::Rule::PercentOff { basis_points };
        }
        Arc::new(doc)
    }

    #[test]
    fn promotions_round_trip_in_snapshots_and_deltas() {
        let data = SnapshotData {
            version: 1,
            created_at_ms: 0,
            entries: vec![entry("A", "*", 1000, false)],
            promotions: Some(doc(1_000)),
        };
        assert_eq!(decode_snapshot(&encode_snapshot(&data)).unwrap(), data);
        let delta = DeltaData {
            base_version: 1,
            version: 2,
            created_at_ms: 0,
            upserts: vec![],
            removals: vec![],
            promotions: Some(doc(2_000)),
        };
        assert_eq!(decode_delta(&encode_delta(&delta)).unwrap(), delta);
    }

    #[test]
    fn invalid_promotions_are_rejected_with_the_reason() {
        let data = SnapshotData {
            version: 1,
            created_at_ms: 0,
            entries: vec![],
            promotions: Some(doc(20_000)),
        };
        let err = decode_snapshot(&encode_snapshot(&data)).unwrap_err();
        assert!(matches!(err, DecodeError::Promotions(_)), "{err}");
        let id = &data.promotions.as_ref().unwrap().promotions[0].id;
        assert!(err.to_string().contains(id.as_str()), "{err}");
        let err = PromotionsDoc::parse("{\"version\":1}").unwrap_err();
        assert!(err.to_string().contains("malformed"), "{err}");
    }

    #[test]
    fn kinds_are_not_confused() {
        let delta = encode_delta(&DeltaData {
            base_version: 1,
            version: 2,
            created_at_ms: 0,
            promotions: None,
            upserts: vec![],
            removals: vec![],
        });
        assert!(matches!(
            decode_snapshot(&delta),
            Err(DecodeError::WrongKind { .. })
        ));
        assert!(matches!(
            decode_delta(b"garbage!"),
            Err(DecodeError::WrongKind { .. })
        ));
        for short in [&b""[..], b"EPDL", b"\x08\0\0\0EPD"] {
            assert!(matches!(
                decode_delta(short),
                Err(DecodeError::WrongKind { .. })
            ));
            assert!(matches!(
                decode_snapshot(short),
                Err(DecodeError::WrongKind { .. })
            ));
            assert!(matches!(
                DeltaView::parse(short),
                Err(DecodeError::WrongKind { .. })
            ));
        }
    }

    #[test]
    fn truncated_buffers_are_rejected() {
        let buf = encode_snapshot(&SnapshotData {
            version: 1,
            created_at_ms: 0,
            promotions: None,
            entries: vec![entry("A", "*", 1000, true)],
        });
        let cut = &buf[..buf.len() / 2];
        assert!(decode_snapshot(cut).is_err());
    }

    #[test]
    fn invalid_entries_are_rejected_with_their_index() {
        let mut bad = entry("B", "*", 100, false);
        bad.floor_minor = 200;
        let buf = encode_snapshot(&SnapshotData {
            version: 1,
            created_at_ms: 0,
            promotions: None,
            entries: vec![entry("A", "*", 1000, false), bad],
        });
        let err = decode_snapshot(&buf).unwrap_err();
        assert!(matches!(err, DecodeError::Entry { index: 1, .. }), "{err}");
    }

    #[test]
    fn delta_views_read_what_decoding_reads_and_refuse_what_it_refuses() {
        let mut removal = PriceKey::chain_wide(Sku::new("B").unwrap());
        removal.store = Dimension::new("s1").unwrap();
        let data = DeltaData {
            base_version: 4,
            version: 5,
            created_at_ms: 9,
            promotions: Some(doc(1_000)),
            upserts: vec![
                entry("A", "s2", 10, true),
                entry("B", "*", 20, false),
                entry("C", "s2", 30, false),
            ],
            removals: vec![removal],
        };
        let buf = encode_delta(&data);
        let view = DeltaView::parse(&buf).unwrap();
        assert_eq!(
            (view.base_version, view.version, view.created_at_ms),
            (4, 5, 9)
        );
        assert_eq!(view.promotions, data.promotions);
        assert_eq!(
            view.upserts().collect::<Vec<_>>(),
            data.upserts.iter().map(EntryRef::of).collect::<Vec<_>>()
        );
        assert_eq!(
            view.removals().collect::<Vec<_>>(),
            data.removals.iter().map(KeyRef::of).collect::<Vec<_>>()
        );

        assert_eq!(delta_change_count(&buf).unwrap(), 4);
        let empty = encode_delta(&DeltaData {
            upserts: vec![],
            removals: vec![],
            ..data.clone()
        });
        assert_eq!(delta_change_count(&empty).unwrap(), 0);
        assert!(matches!(
            delta_change_count(&encode_snapshot(&SnapshotData {
                version: 1,
                created_at_ms: 0,
                entries: vec![],
                promotions: None,
            })),
            Err(DecodeError::WrongKind { .. })
        ));
        assert!(delta_change_count(&buf[..12]).is_err());
        assert!(matches!(
            snapshot_entry_count(&buf),
            Err(DecodeError::WrongKind { .. })
        ));
        let snapshot = encode_snapshot(&SnapshotData {
            version: 1,
            created_at_ms: 0,
            entries: data.upserts.clone(),
            promotions: None,
        });
        assert_eq!(snapshot_entry_count(&snapshot).unwrap(), 3);
        assert!(snapshot_entry_count(&snapshot[..12]).is_err());

        let mut below_floor = data.clone();
        below_floor.upserts[2].floor_minor = 1_000;
        let buf = encode_delta(&below_floor);
        let err = DeltaView::parse(&buf).unwrap_err();
        assert!(matches!(err, DecodeError::Entry { index: 2, .. }), "{err}");
        assert_eq!(err.to_string(), decode_delta(&buf).unwrap_err().to_string());

        let mut bad_currency = encode_delta(&DeltaData {
            promotions: None,
            ..data.clone()
        });
        let at = bad_currency
            .windows(3)
            .position(|w| w == b"EUR")
            .expect("currency in the buffer");
        bad_currency[at..at + 3].copy_from_slice(b"XQZ");
        let err = DeltaView::parse(&bad_currency).unwrap_err();
        assert!(
            matches!(err, DecodeError::Currency { index: 0, .. }),
            "{err}"
        );

        let cut = &buf[..buf.len() / 2];
        assert!(DeltaView::parse(cut).is_err());
        assert!(matches!(
            DeltaView::parse(&encode_snapshot(&SnapshotData {
                version: 1,
                created_at_ms: 0,
                promotions: None,
                entries: vec![],
            })),
            Err(DecodeError::WrongKind { .. })
        ));
    }

    /// Damaged buffers: the in-place reader never panics, refuses what the verifier
    /// refuses, and reads what decoding reads from anything it accepts.
    #[test]
    fn delta_views_of_damaged_buffers_agree_with_decoding() {
        let data = DeltaData {
            base_version: 1,
            version: 2,
            created_at_ms: 3,
            promotions: None,
            upserts: (0..6)
                .map(|i| {
                    entry(
                        &format!("SKU-{i}"),
                        ["*", "s1"][i % 2],
                        100 + i as i64,
                        i % 3 == 0,
                    )
                })
                .collect(),
            removals: vec![PriceKey::chain_wide(Sku::new("GONE").unwrap())],
        };
        let good = encode_delta(&data);
        // xorshift: deterministic, no dependency.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut accepted, mut refused) = (0, 0);
        for round in 0..20_000 {
            let mut buf = good.clone();
            for _ in 0..1 + round % 3 {
                let at = next() as usize % buf.len();
                buf[at] = match next() % 4 {
                    0 => 0,
                    1 => 0xff,
                    _ => next() as u8,
                };
            }
            if round % 97 == 0 {
                buf.truncate(next() as usize % buf.len());
            }
            let decoded = decode_delta(&buf);
            match DeltaView::parse(&buf) {
                Ok(view) => {
                    let decoded = decoded.unwrap_or_else(|err| {
                        panic!("round {round}: the reader accepted what decoding refused: {err}")
                    });
                    assert_eq!(
                        view.upserts().collect::<Vec<_>>(),
                        decoded.upserts.iter().map(EntryRef::of).collect::<Vec<_>>()
                    );
                    assert_eq!(
                        view.removals().collect::<Vec<_>>(),
                        decoded.removals.iter().map(KeyRef::of).collect::<Vec<_>>()
                    );
                    accepted += 1;
                }
                Err(_) => refused += 1,
            }
        }
        assert!(
            accepted > 100 && refused > 100,
            "{accepted} accepted, {refused} refused"
        );
    }
}
