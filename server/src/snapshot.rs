//! The immutable, versioned price table the edge serves from.
//!
//! Layout: SKUs are hashed (fixed-seed ahash) into `2^k` shards chosen from the top bits
//! of the hash; a shard is a slice of slots `(hash, record)` sorted by `(hash, sku)`; a
//! record ([`SkuPrices`]) holds every variant (store × channel × segment) of one SKU,
//! sorted most specific first so the first match is the answer (see
//! `edgeprice_pricing::key` for the fallback order). Store, channel and segment names are
//! interned into a [`Dictionary`] so a variant is three `u32`s and a request resolves its
//! dimensions once.
//!
//! A delta produces the next version by structural sharing: the shard table is copied
//! (one plain pointer per shard, a memcpy), only shards containing a changed SKU are
//! rebuilt, and inside them only the changed records are new — every other shard and
//! record is shared with the previous version. Shared parts carry no reference count:
//! the versions made from one another own them together and free what a version
//! replaced once no older version is alive (see [`Lineage`]), so a 10,000-entry delta
//! on a 1,000,000-entry table touches the memory of about 10,000 records and shards, and
//! nothing else.
//!
//! A snapshot also holds its compiled promotions ([`SnapshotPromotions`]): compiled
//! once, on the writer thread, when a snapshot or delta brings a promotions document,
//! and shared (one `Arc`) by every later version that does not replace it.
//!
//! Nothing here does I/O; lookups take no lock and do not allocate (building and
//! dropping versions take the lineage's mutex, on the writer thread).

use std::alloc::Layout;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ahash::RandomState;
use chrono_tz::Tz;
use edgeprice_pricing::key::{specificity, MAX_KEY_LEN};
use edgeprice_pricing::promo::{shelf_price, CartContext, CartLine, PromotionSet};
use edgeprice_pricing::{Currency, Dimension, PriceEntry, PriceKey, PromotionTag, Sku, ANY};
use edgeprice_schemas::codec::{
    DeltaData, DeltaView, EntryRef, KeyRef, PromotionRef, PromotionsDoc, SnapshotData,
};

/// Seeds for SKU hashing. Fixed so shard placement is stable within a process and
/// across versions (structural sharing relies on it); lookup keys come from clients but
/// the table's contents do not, so a fixed seed gives attackers nothing to skew.
const HASH_SEEDS: (u64, u64, u64, u64) = (
    0x243f_6a88_85a3_08d3,
    0x1319_8a2e_0370_7344,
    0xa409_3822_299f_31d0,
    0x082e_fa98_ec4e_6c89,
);

/// Average number of SKUs per shard a full build aims for.
const SKUS_PER_SHARD: usize = 2;

/// Interned dimension id of `*`.
pub const ANY_ID: u32 = 0;

fn hasher() -> RandomState {
    RandomState::with_seeds(HASH_SEEDS.0, HASH_SEEDS.1, HASH_SEEDS.2, HASH_SEEDS.3)
}

/// Hash of a SKU as used for sharding and ETags.
#[inline]
pub fn sku_hash(sku: &str) -> u64 {
    hasher().hash_one(sku)
}

/// Why a snapshot or delta cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("duplicate entry for {0}")]
    DuplicateKey(String),
    #[error("delta is based on version {base} but the edge is at version {current}")]
    VersionConflict { base: u64, current: u64 },
    #[error("delta version {version} does not advance past base version {base}")]
    NotAdvancing { base: u64, version: u64 },
    #[error("invalid promotions: {0}")]
    Promotions(String),
}

/// A snapshot's promotions: the document as published and the compiled set.
#[derive(Debug)]
pub struct SnapshotPromotions {
    doc: Arc<PromotionsDoc>,
    set: PromotionSet,
    default_zone: Tz,
    store_zones: HashMap<String, Tz>,
    /// Promotion id → what GET answers show about it, rendered once.
    shown: HashMap<Box<str>, Arc<Promo>>,
}

/// The shelf price of a resolved entry under the snapshot's promotion set: what
/// `GET /v1/prices` shows when the snapshot carries promotions.
#[derive(Debug, Clone)]
pub struct Shelf {
    /// Unit price after automatic item-level promotions, never below the floor.
    pub price_minor: i64,
    /// The promotion that gave the largest part of the discount; its `price_minor` is
    /// the shelf price.
    pub promotion: Option<(Arc<Promo>, i64)>,
}

impl SnapshotPromotions {
    /// Compiles a document (about 30 ms for 10,000 promotions: writer thread only).
    pub fn compile(doc: Arc<PromotionsDoc>) -> Result<SnapshotPromotions, SnapshotError> {
        let zone = |name: &str| {
            name.parse::<Tz>()
                .map_err(|_| SnapshotError::Promotions(format!("unknown time zone {name:?}")))
        };
        let default_zone = match &doc.time_zone {
            Some(name) => zone(name)?,
            None => Tz::UTC,
        };
        let store_zones = doc
            .store_time_zones
            .iter()
            .map(|(store, name)| Ok((store.clone(), zone(name)?)))
            .collect::<Result<_, SnapshotError>>()?;
        let set = PromotionSet::compile(doc.version, doc.promotions.clone(), doc.policy.clone())
            .map_err(|err| SnapshotError::Promotions(err.to_string()))?;
        let shown = doc
            .promotions
            .iter()
            .map(|p| {
                let starts = p.conditions.starts_at_ms.unwrap_or(i64::MIN);
                let ends = p.conditions.ends_at_ms.unwrap_or(i64::MAX);
                let promo = Promo {
                    id: p.id.as_str().into(),
                    label: p.label.as_str().into(),
                    id_json: json_escape(&p.id).into(),
                    label_json: json_escape(&p.label).into(),
                    starts_at_json: crate::render::rfc3339_json(starts).into(),
                    ends_at_json: crate::render::rfc3339_json(ends).into(),
                    price_minor: 0,
                    starts_at_ms: starts,
                    ends_at_ms: ends,
                };
                (p.id.as_str().into(), Arc::new(promo))
            })
            .collect();
        Ok(SnapshotPromotions {
            doc,
            set,
            default_zone,
            store_zones,
            shown,
        })
    }

    pub fn set(&self) -> &PromotionSet {
        &self.set
    }

    pub fn doc(&self) -> &Arc<PromotionsDoc> {
        &self.doc
    }

    /// The category of a SKU, for category-targeted promotions.
    #[inline]
    pub fn category(&self, sku: &str) -> Option<&str> {
        self.doc.categories.get(sku).map(String::as_str)
    }

    /// The time zone of a store (`*`: the default zone).
    #[inline]
    pub fn time_zone(&self, store: &str) -> Tz {
        self.store_zones
            .get(store)
            .copied()
            .unwrap_or(self.default_zone)
    }

    /// Shipping fee of a cart before free-shipping promotions.
    pub fn shipping_fee_minor(&self) -> i64 {
        self.doc.shipping_fee_minor
    }

    /// The shelf price of `r` at `now_ms`: one unit, for the entry's own store, channel
    /// and segment; the entry's active promotion tag (decided by the control plane)
    /// first, then the set's automatic item-level promotions. The promotion shown is the
    /// set's largest discount if it gave one, else the tag.
    pub fn shelf(&self, snapshot: &Snapshot, r: &Resolved<'_>, now_ms: i64) -> Shelf {
        let dict = snapshot.dictionary();
        let v = r.variant;
        let e = &v.entry;
        let entry_price = e.effective_price_at(now_ms);
        // The tag's `Arc` is cloned only when it is the promotion shown (an atomic
        // increment per request otherwise, on every core).
        let tag = |price: i64| {
            e.promotion
                .as_ref()
                .filter(|p| p.is_active_at(now_ms))
                .map(|p| (Arc::clone(p), price))
        };
        let fallback = || Shelf {
            price_minor: entry_price,
            promotion: tag(entry_price),
        };
        let (Ok(sku), Ok(store), Ok(channel), Ok(segment)) = (
            Sku::new(&r.sku.sku),
            Dimension::new(dict.name(v.store)),
            Dimension::new(dict.name(v.channel)),
            Dimension::new(dict.name(v.segment)),
        ) else {
            return fallback();
        };
        let line = CartLine {
            sku,
            quantity: 1,
            unit_list_price_minor: e.list_price_minor,
            unit_price_minor: entry_price,
            unit_floor_minor: e.floor_minor,
            category: self.category(&r.sku.sku).map(str::to_owned),
        };
        let mut ctx = CartContext::new(e.currency, now_ms, self.time_zone(store.as_str()));
        ctx.store = store;
        ctx.channel = channel;
        ctx.segment = segment;
        ctx.explain = false;
        let Ok(shelf) = shelf_price(&self.set, &line, &ctx) else {
            return fallback();
        };
        // Largest discount first; ties to the first applied.
        let best = shelf
            .promotions
            .iter()
            .rev()
            .max_by_key(|p| p.amount_minor)
            .and_then(|p| self.shown.get(p.id.as_str()));
        Shelf {
            price_minor: shelf.unit_price_minor,
            promotion: best
                .map(|p| (Arc::clone(p), shelf.unit_price_minor))
                .or_else(|| tag(shelf.unit_price_minor)),
        }
    }
}

/// Interned store, channel and segment names. Id 0 is `*`. Ids only grow within a
/// chain of deltas, so they are stable between versions that share shards.
#[derive(Debug, Clone)]
pub struct Dictionary {
    names: Vec<Box<str>>,
    ids: HashMap<Box<str>, u32, RandomState>,
}

impl Dictionary {
    fn new() -> Dictionary {
        let mut dict = Dictionary {
            names: Vec::new(),
            ids: HashMap::with_hasher(hasher()),
        };
        dict.intern(ANY);
        dict
    }

    fn intern(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(name.into());
        self.ids.insert(name.into(), id);
        id
    }

    /// The id of a requested dimension value; `None` when no entry names it (only `*`
    /// entries can then match).
    #[inline]
    pub fn lookup(&self, name: &str) -> Option<u32> {
        self.ids.get(name).copied()
    }

    #[inline]
    pub fn name(&self, id: u32) -> &str {
        &self.names[id as usize]
    }
}

/// A promotion as the edge holds it; id and label are also kept pre-escaped for JSON
/// so rendering an answer never escapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promo {
    pub id: Box<str>,
    pub label: Box<str>,
    pub id_json: Box<str>,
    pub label_json: Box<str>,
    /// `starts_at` / `ends_at` as RFC 3339 JSON strings (quotes included).
    pub starts_at_json: Box<str>,
    pub ends_at_json: Box<str>,
    pub price_minor: i64,
    pub starts_at_ms: i64,
    pub ends_at_ms: i64,
}

impl Promo {
    #[inline]
    pub fn is_active_at(&self, now_ms: i64) -> bool {
        self.starts_at_ms <= now_ms && now_ms < self.ends_at_ms
    }
}

/// One price as stored. Open-ended windows are `i64::MIN` / `i64::MAX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub currency: Currency,
    pub list_price_minor: i64,
    pub price_minor: i64,
    pub floor_minor: i64,
    pub valid_from_ms: i64,
    pub valid_until_ms: i64,
    pub revision: u64,
    pub promotion: Option<Arc<Promo>>,
}

impl Entry {
    #[inline]
    pub fn is_effective_at(&self, now_ms: i64) -> bool {
        self.valid_from_ms <= now_ms && now_ms < self.valid_until_ms
    }

    /// The active promotion at `now_ms`, if any.
    #[inline]
    pub fn active_promotion(&self, now_ms: i64) -> Option<&Promo> {
        self.promotion.as_deref().filter(|p| p.is_active_at(now_ms))
    }

    /// The unit price at `now_ms`: promotion price when one is active, never below floor.
    #[inline]
    pub fn effective_price_at(&self, now_ms: i64) -> i64 {
        let base = match self.active_promotion(now_ms) {
            Some(promo) => promo.price_minor.min(self.price_minor),
            None => self.price_minor,
        };
        base.max(self.floor_minor)
    }
}

/// A priced variant of a SKU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    pub store: u32,
    pub channel: u32,
    pub segment: u32,
    pub entry: Entry,
}

impl Variant {
    /// Fallback rank: higher is more specific.
    #[inline]
    pub fn rank(&self) -> u8 {
        specificity(
            self.store != ANY_ID,
            self.channel != ANY_ID,
            self.segment != ANY_ID,
        )
    }

    #[inline]
    fn matches(&self, store: u32, channel: u32, segment: u32) -> bool {
        (self.store == ANY_ID || self.store == store)
            && (self.channel == ANY_ID || self.channel == channel)
            && (self.segment == ANY_ID || self.segment == segment)
    }

    fn same_key(&self, other: &Variant) -> bool {
        self.store == other.store && self.channel == other.channel && self.segment == other.segment
    }
}

/// All variants of one SKU, most specific first, in one allocation: the header and the
/// variants after it, so a lookup or a delta reaches the variants without another
/// dependent cache miss and a delta allocates (and later frees) one block per changed
/// SKU. Never changed once a version holds it; owned by the lineage of versions that
/// share it (see [`Lineage`]). Made by [`leak_record`], freed by [`free_record`].
#[derive(Debug)]
#[repr(C)]
pub struct SkuPrices {
    pub hash: u64,
    /// `variants.len()`, readable through a thin [`RecordPtr`].
    len: u32,
    /// Whether a variant holds a promotion, i.e. whether freeing the record has to drop
    /// its variants (and so read all of them) rather than only give back its block.
    promoted: bool,
    pub sku: SkuName,
    pub variants: [Variant],
}

/// The fields of [`SkuPrices`] before its variants, in the same order: with `repr(C)`
/// both lay them out alike, so a thin pointer to this reaches the record's length.
#[repr(C)]
struct RecordHead {
    hash: u64,
    len: u32,
    promoted: bool,
    sku: SkuName,
}

/// A record as the shards hold it: a thin pointer (a slot stays 16 bytes).
type RecordPtr = NonNull<RecordHead>;

/// The layout of a record of `len` variants: the header, then the variants.
fn record_layout(len: usize) -> Layout {
    let variants = Layout::array::<Variant>(len).expect("a record's variants fit in memory");
    let (layout, _) = Layout::new::<RecordHead>()
        .extend(variants)
        .expect("a record fits in memory");
    layout.pad_to_align()
}

/// The whole record behind a thin pointer.
///
/// # Safety
/// `record` came from [`leak_record`] and is not freed while the returned pointer is used.
#[inline(always)]
unsafe fn record_raw(record: RecordPtr) -> *mut SkuPrices {
    // SAFETY: per the contract the header is initialised; `len` is its variant count.
    let len = unsafe { (*record.as_ptr()).len } as usize;
    std::ptr::slice_from_raw_parts_mut(record.as_ptr().cast::<Variant>(), len) as *mut SkuPrices
}

/// A SKU held inline in its record (SKUs are at most [`MAX_KEY_LEN`] bytes): one
/// allocation less per record, and a lookup compares it on a line it already loaded.
#[derive(Clone)]
pub struct SkuName {
    len: u8,
    bytes: [u8; MAX_KEY_LEN],
}

impl SkuName {
    fn new(sku: &str) -> SkuName {
        assert!(
            sku.len() <= MAX_KEY_LEN,
            "SKUs are validated to {MAX_KEY_LEN} bytes"
        );
        let mut bytes = [0; MAX_KEY_LEN];
        bytes[..sku.len()].copy_from_slice(sku.as_bytes());
        SkuName {
            len: sku.len() as u8,
            bytes,
        }
    }

    #[inline]
    pub fn as_str(&self) -> &str {
        let bytes = &self.bytes[..self.len as usize];
        // SAFETY: `bytes` is a copy of a whole `&str` (see `new`).
        unsafe { std::str::from_utf8_unchecked(bytes) }
    }
}

impl std::ops::Deref for SkuName {
    type Target = str;
    #[inline]
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Debug for SkuName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for SkuName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A hint to load the cache line at `at`; never faults, reads nothing.
#[inline(always)]
fn prefetch<T>(at: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch is a hint: it does not fault on any address and has no effect
    // on the program's state.
    unsafe {
        std::arch::x86_64::_mm_prefetch(at as *const i8, std::arch::x86_64::_MM_HINT_T0)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

/// Stable order: rank descending, then ids, so equal inputs build equal tables.
fn sort_variants(variants: &mut [Variant]) {
    variants.sort_by(|a, b| {
        b.rank()
            .cmp(&a.rank())
            .then(a.store.cmp(&b.store))
            .then(a.channel.cmp(&b.channel))
            .then(a.segment.cmp(&b.segment))
    });
}

/// One SKU of a shard: its hash next to the record, so searching a shard and copying
/// it never touch the records of SKUs a delta leaves alone.
#[derive(Debug, Clone, Copy)]
struct Slot {
    hash: u64,
    prices: RecordPtr,
}

/// A shard: slots sorted by `(hash, sku)`, one boxed slice owned by the lineage.
type ShardPtr = NonNull<[Slot]>;

/// Blocks of freed records and shards, kept for the next ones of the same size.
///
/// A delta replaces its changed records and shards with new ones of (nearly always)
/// the same sizes, so most of what one version retires is what the next one
/// allocates. Through the allocator that cost a cache miss per block twice: freeing
/// writes a free-list link into the cold block and allocating reads it back (a
/// dependent load, about a quarter of a 10,000-entry delta's CPU). Here a free block
/// is a pointer on a stack: freeing touches nothing, and allocating pops a pointer and
/// starts loading the block it will write next.
#[derive(Debug, Default)]
struct BlockPool {
    /// Free blocks by size: `by_size[n]` holds blocks of `n * ALIGN` bytes.
    by_size: Vec<Vec<NonNull<u8>>>,
    bytes: usize,
}

impl BlockPool {
    /// Every block's alignment (records and shards hold nothing more aligned).
    const ALIGN: usize = 8;
    /// At most this many bytes wait in the pool; the rest go back to the allocator.
    /// (A 10,000-entry delta on the synthetic table frees about 8 MiB.)
    const MAX_BYTES: usize = 32 << 20;
    /// Larger blocks (records of SKUs with dozens of variants: rare) always go through
    /// the allocator.
    const MAX_SIZE: usize = 8 << 10;

    fn class(layout: Layout) -> usize {
        debug_assert!(layout.align() <= Self::ALIGN && layout.size() % Self::ALIGN == 0);
        layout.size() / Self::ALIGN
    }

    /// A block of `layout` (non-zero size, alignment at most [`Self::ALIGN`]).
    fn alloc(&mut self, layout: Layout) -> NonNull<u8> {
        if let Some(free) = self.by_size.get_mut(Self::class(layout)) {
            if let Some(block) = free.pop() {
                self.bytes -= layout.size();
                if let Some(next) = free.last() {
                    prefetch(next.as_ptr());
                }
                return block;
            }
        }
        let layout = Self::padded(layout);
        // SAFETY: `layout` has a non-zero size.
        match NonNull::new(unsafe { std::alloc::alloc(layout) }) {
            Some(block) => block,
            None => std::alloc::handle_alloc_error(layout),
        }
    }

    /// # Safety
    /// `block` came from [`Self::alloc`] with `layout` (of this or any pool) and is no
    /// longer used.
    unsafe fn free(&mut self, block: NonNull<u8>, layout: Layout) {
        let class = Self::class(layout);
        if layout.size() <= Self::MAX_SIZE && self.bytes + layout.size() <= Self::MAX_BYTES {
            if self.by_size.len() <= class {
                self.by_size.resize_with(class + 1, Vec::new);
            }
            self.by_size[class].push(block);
            self.bytes += layout.size();
        } else {
            // SAFETY: per the contract, allocated with `padded(layout)`.
            unsafe { std::alloc::dealloc(block.as_ptr(), Self::padded(layout)) };
        }
    }

    /// Every block is allocated at the pool's alignment, so a block of one size serves
    /// any layout of that size.
    fn padded(layout: Layout) -> Layout {
        Layout::from_size_align(layout.size(), Self::ALIGN).expect("a block fits in memory")
    }
}

impl Drop for BlockPool {
    fn drop(&mut self) {
        for (class, free) in self.by_size.iter().enumerate() {
            let layout = Layout::from_size_align(class * Self::ALIGN, Self::ALIGN)
                .expect("a block fits in memory");
            for block in free {
                // SAFETY: every pooled block is unused and was allocated at its size.
                unsafe { std::alloc::dealloc(block.as_ptr(), layout) };
            }
        }
    }
}

/// A new record of `sku` holding the variants moved out of `variants` (left empty, its
/// capacity kept for the next record), in a block from `pool`.
fn leak_record(
    pool: &mut BlockPool,
    hash: u64,
    sku: &str,
    variants: &mut Vec<Variant>,
) -> RecordPtr {
    #[cfg(test)]
    tests::LIVE_RECORDS.with(|n| n.set(n.get() + 1));
    let len = variants.len();
    let record = pool.alloc(record_layout(len)).cast::<RecordHead>();
    // SAFETY: the block is `record_layout(len)`: room for the header and `len`
    // variants at the offsets `SkuPrices` gives them (checked in the tests). The
    // variants are moved: `set_len(0)` keeps `variants` from dropping them.
    unsafe {
        record.as_ptr().write(RecordHead {
            hash,
            len: u32::try_from(len).expect("a SKU has fewer than 2^32 variants"),
            promoted: variants.iter().any(|v| v.entry.promotion.is_some()),
            sku: SkuName::new(sku),
        });
        let whole = record_raw(record);
        let to = std::ptr::addr_of_mut!((*whole).variants).cast::<Variant>();
        std::ptr::copy_nonoverlapping(variants.as_ptr(), to, len);
        variants.set_len(0);
    }
    record
}

/// A new shard holding `slots`, in a block from `pool`.
fn leak_shard(pool: &mut BlockPool, slots: &[Slot]) -> ShardPtr {
    let start = if slots.is_empty() {
        NonNull::<Slot>::dangling()
    } else {
        let block = pool.alloc(Layout::for_value(slots)).cast::<Slot>();
        // SAFETY: the block has room for `slots.len()` slots; `Slot` is `Copy`.
        unsafe { std::ptr::copy_nonoverlapping(slots.as_ptr(), block.as_ptr(), slots.len()) };
        block
    };
    NonNull::slice_from_raw_parts(start, slots.len())
}

/// A record to free, with what freeing it needs from its header: read when the record
/// was last used, so freeing a record without promotions does not touch it at all.
#[derive(Debug, Clone, Copy)]
struct DeadRecord {
    record: RecordPtr,
    len: u32,
    promoted: bool,
}

impl DeadRecord {
    fn of(record: &SkuPrices) -> DeadRecord {
        DeadRecord {
            record: NonNull::from(record).cast(),
            len: record.len,
            promoted: record.promoted,
        }
    }
}

/// Gives the record's block to `pool`, dropping its variants first only if one holds a
/// promotion (the rest have nothing to drop).
///
/// # Safety
/// `dead.record` came from [`leak_record`], is freed once, no version can reach it, and
/// `dead` was made from it.
unsafe fn free_dead(pool: &mut BlockPool, dead: DeadRecord) {
    #[cfg(test)]
    tests::LIVE_RECORDS.with(|n| n.set(n.get() - 1));
    // SAFETY: per the contract, this is the unique owner of a block `leak_record` made
    // with `record_layout(len)` and initialised whole.
    unsafe {
        if dead.promoted {
            let variants = std::ptr::addr_of_mut!((*record_raw(dead.record)).variants);
            std::ptr::drop_in_place(variants);
        }
        pool.free(dead.record.cast(), record_layout(dead.len as usize));
    }
}

/// [`free_dead`] reading the header first.
///
/// # Safety
/// `record` came from [`leak_record`], is freed once, and no version can reach it.
unsafe fn free_record(pool: &mut BlockPool, record: RecordPtr) {
    // SAFETY: per the contract the record is alive until freed here.
    unsafe { free_dead(pool, DeadRecord::of(&*record_raw(record))) }
}

/// # Safety
/// `shard` came from [`leak_shard`], is freed once, and no version can reach it.
unsafe fn free_shard(pool: &mut BlockPool, shard: ShardPtr) {
    if !shard.is_empty() {
        // SAFETY: per the contract, a block `leak_shard` took for these slots.
        unsafe { pool.free(shard.cast(), Layout::for_value(shard.as_ref())) };
    }
}

/// Shards and records one version had and its successor does not: freed once no
/// version older than the successor is alive.
#[derive(Debug)]
struct Retired {
    /// Generation of the version that replaced them.
    gen: u64,
    shards: Vec<ShardPtr>,
    records: Vec<DeadRecord>,
}

impl Retired {
    /// # Safety
    /// No version that can reach these is alive, and they are freed only here.
    unsafe fn free(self, pool: &mut BlockPool) {
        for dead in self.records {
            // SAFETY: forwarded from the caller.
            unsafe { free_dead(pool, dead) };
        }
        for shard in self.shards {
            // SAFETY: forwarded from the caller.
            unsafe { free_shard(pool, shard) };
        }
    }
}

/// Shards and records the newest transition created, kept so that dropping the newest
/// version while its base is alive (a delta built but not persisted) gives them back.
#[derive(Debug)]
struct Born {
    gen: u64,
    base_gen: u64,
    shards: Vec<ShardPtr>,
    records: Vec<RecordPtr>,
}

/// Who owns the shards and records that versions share.
///
/// Versions made from one another by [`Snapshot::apply`] form a lineage and share
/// shards and records by plain pointer: there is no reference count per shard or
/// record, so a delta costs what it changes, not the size of the table. (With an
/// `Arc` per shard and per record, a 10,000-entry delta on 1.1M entries bumped and
/// later dropped ~65k shard counts and ~17k counts of records next to the changed
/// ones — each a cache miss behind a locked instruction — which was most of its CPU.)
///
/// The lineage frees instead, by generation: every version has a generation number,
/// increasing along the chain. When version `g` is made from `g - 1`, what `g - 1`
/// had and `g` does not is retired under `g`; a version newer than `g` never holds it,
/// so it is freed once no version older than `g` is alive. Only the newest version (the
/// tip) may be extended, which keeps the chain straight; applying a delta to an older
/// version first copies it into a lineage of its own. When the tip is dropped while its
/// base is alive, the transition is undone (what it created is freed, what it retired
/// is the base's again) and the base is the tip again. Whatever the last tip could
/// reach is freed with the lineage, when its last version goes.
///
/// The mutex is taken by `apply` and by dropping a version — both on the store's
/// writer thread — never by lookups.
#[derive(Debug)]
struct Lineage {
    state: Mutex<LineageState>,
}

#[derive(Debug)]
struct LineageState {
    next_gen: u64,
    /// The newest version (alive or not).
    tip: u64,
    /// Generations of the versions not yet dropped.
    live: BTreeSet<u64>,
    /// Oldest first.
    retired: VecDeque<Retired>,
    /// What the transition into `tip` created.
    tip_born: Option<Born>,
    /// The table of a dropped tip that could not be undone; freed with the lineage.
    orphan: Option<Box<[ShardPtr]>>,
    /// Blocks of freed records and shards, for the next delta's.
    pool: BlockPool,
}

// SAFETY: the pointers are to `Slot`s and `SkuPrices` (Send + Sync data) owned by the
// lineage and only freed under its mutex, by the rules above.
unsafe impl Send for LineageState {}

impl Lineage {
    /// A new lineage whose first version has generation 1.
    fn new() -> Arc<Lineage> {
        Arc::new(Lineage {
            state: Mutex::new(LineageState {
                next_gen: 2,
                tip: 1,
                live: BTreeSet::from([1]),
                retired: VecDeque::new(),
                tip_born: None,
                orphan: None,
                pool: BlockPool::default(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, LineageState> {
        // A panic mid-apply leaves at worst unreachable memory; the rules still hold.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl LineageState {
    /// Frees what only dropped versions could reach.
    fn release(&mut self) {
        let oldest_live = self.live.first().copied().unwrap_or(u64::MAX);
        while self.retired.front().is_some_and(|r| r.gen <= oldest_live) {
            let retired = self.retired.pop_front().expect("checked");
            // SAFETY: every version that could reach these is older than `gen` and none
            // of those is alive; a retired item is in exactly one list.
            unsafe { retired.free(&mut self.pool) };
        }
    }
}

impl Drop for Lineage {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        for retired in state.retired.drain(..) {
            // SAFETY: no version of the lineage is left.
            unsafe { retired.free(&mut state.pool) };
        }
        if let Some(table) = state.orphan.take() {
            for shard in table.iter() {
                // SAFETY: no version is left; what the last tip reaches was never retired.
                for slot in unsafe { shard.as_ref() } {
                    unsafe { free_record(&mut state.pool, slot.prices) };
                }
                unsafe { free_shard(&mut state.pool, *shard) };
            }
        }
    }
}

/// The dimensions a request asks for, resolved against a snapshot's dictionary.
#[derive(Debug, Clone, Copy)]
pub struct Query {
    store: u32,
    channel: u32,
    segment: u32,
}

/// Sentinel for a requested value no entry names: matches only `*`.
const UNKNOWN_ID: u32 = u32::MAX;

/// A lookup result: which SKU record and which of its variants answered.
#[derive(Debug, Clone, Copy)]
pub struct Resolved<'s> {
    pub sku: &'s SkuPrices,
    pub variant: &'s Variant,
    /// When the answer may change because of the table alone (a window opening or
    /// closing); `i64::MAX` when only a new version can change it.
    pub valid_until_ms: i64,
}

/// An immutable price table at one version.
pub struct Snapshot {
    version: u64,
    created_at_ms: i64,
    dict: Arc<Dictionary>,
    /// Owned by `lineage`, valid while this version is alive.
    shards: Box<[ShardPtr]>,
    /// `hash >> shard_shift` is the shard index.
    shard_shift: u32,
    entry_count: usize,
    sku_count: usize,
    promotions: Option<Arc<SnapshotPromotions>>,
    lineage: Arc<Lineage>,
    gen: u64,
}

// SAFETY: a version is immutable; what its pointers reach is immutable too and is
// freed only once no version that can reach it is alive (see `Lineage`).
unsafe impl Send for Snapshot {}
unsafe impl Sync for Snapshot {}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("version", &self.version)
            .field("entries", &self.entry_count)
            .field("skus", &self.sku_count)
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        let mut state = self.lineage.lock();
        state.live.remove(&self.gen);
        if state.tip == self.gen {
            match state.tip_born.take() {
                Some(born) if born.gen == self.gen && state.live.contains(&born.base_gen) => {
                    // Undo the transition: the base is the tip again.
                    if state.retired.back().is_some_and(|r| r.gen == self.gen) {
                        state.retired.pop_back();
                    }
                    // SAFETY: only this version (the tip) could reach what its
                    // transition created, and it is going.
                    unsafe {
                        Retired {
                            gen: born.gen,
                            shards: born.shards,
                            records: born
                                .records
                                .into_iter()
                                .map(|record| DeadRecord::of(&*record_raw(record)))
                                .collect(),
                        }
                        .free(&mut state.pool)
                    };
                    state.tip = born.base_gen;
                }
                _ => state.orphan = Some(std::mem::take(&mut self.shards)),
            }
        }
        state.release();
    }
}

/// Interns the dimensions of the entries of one update. Repeated names in an encoded
/// buffer are one shared string, so a hit on the same bytes skips hashing.
struct Interner<'d> {
    base: &'d Dictionary,
    grown: Option<Dictionary>,
    recent: [(usize, usize, u32); 3],
}

impl<'d> Interner<'d> {
    fn new(base: &'d Dictionary) -> Interner<'d> {
        Interner {
            base,
            grown: None,
            recent: [(0, 0, ANY_ID); 3],
        }
    }

    #[inline]
    fn id(&mut self, position: usize, name: &str) -> u32 {
        if name == ANY {
            return ANY_ID;
        }
        let (at, len, id) = self.recent[position];
        if at == name.as_ptr() as usize && len == name.len() {
            return id;
        }
        let id = match self.base.lookup(name) {
            Some(id) => id,
            None => self
                .grown
                .get_or_insert_with(|| self.base.clone())
                .intern(name),
        };
        self.recent[position] = (name.as_ptr() as usize, name.len(), id);
        id
    }

    fn variant<'a>(
        &mut self,
        promos: &mut PromoCache<'a>,
        e: &EntryRef<'a>,
        revision: Option<u64>,
    ) -> Variant {
        let (store, channel, segment) = (
            self.id(0, e.key.store),
            self.id(1, e.key.channel),
            self.id(2, e.key.segment),
        );
        Variant {
            store,
            channel,
            segment,
            entry: entry_from(promos, e, revision),
        }
    }
}

impl Snapshot {
    /// Builds a table from a full snapshot.
    pub fn build(data: SnapshotData) -> Result<Snapshot, SnapshotError> {
        let promotions = data
            .promotions
            .map(|doc| SnapshotPromotions::compile(doc).map(Arc::new))
            .transpose()?;
        let empty = Dictionary::new();
        let mut interner = Interner::new(&empty);
        let hasher = hasher();
        let mut rows: Vec<(u64, EntryRef<'_>)> = data
            .entries
            .iter()
            .map(|e| (hasher.hash_one(e.key.sku.as_str()), EntryRef::of(e)))
            .collect();
        rows.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.key.sku.cmp(b.1.key.sku)));

        let sku_count = count_groups(&rows);
        let shard_bits = (sku_count / SKUS_PER_SHARD)
            .max(1)
            .next_power_of_two()
            .trailing_zeros();
        let shard_shift = 64 - shard_bits;
        let mut shard_lists: Vec<Vec<Slot>> =
            (0..1usize << shard_bits).map(|_| Vec::new()).collect();

        let entry_count = rows.len();
        let mut promos = promo_cache();
        let mut pool = BlockPool::default();
        let mut records = Vec::with_capacity(sku_count);
        let mut rows = rows.into_iter().peekable();
        let mut failed = None;
        // The variants of the SKU being built; one buffer for all of them.
        let mut variants: Vec<Variant> = Vec::new();
        while let Some((hash, first)) = rows.next() {
            let sku = first.key.sku;
            variants.push(interner.variant(&mut promos, &first, None));
            while let Some((_, next)) = rows.next_if(|(h, e)| *h == hash && e.key.sku == sku) {
                let variant = interner.variant(&mut promos, &next, None);
                if variants.iter().any(|v| v.same_key(&variant)) {
                    let dict = interner.grown.as_ref().unwrap_or(&empty);
                    failed = Some(SnapshotError::DuplicateKey(format!(
                        "{sku}@{}/{}/{}",
                        dict.name(variant.store),
                        dict.name(variant.channel),
                        dict.name(variant.segment)
                    )));
                    break;
                }
                variants.push(variant);
            }
            if failed.is_some() {
                break;
            }
            sort_variants(&mut variants);
            let record = leak_record(&mut pool, hash, sku, &mut variants);
            records.push(record);
            shard_lists[shard_index(hash, shard_shift)].push(Slot {
                hash,
                prices: record,
            });
        }
        if let Some(err) = failed {
            for record in records {
                // SAFETY: just made, reachable from nothing else.
                unsafe { free_record(&mut pool, record) };
            }
            return Err(err);
        }
        let shards = shard_lists
            .iter()
            .map(|slots| leak_shard(&mut pool, slots))
            .collect();
        let dict = interner.grown.take().unwrap_or(empty);
        Ok(Snapshot {
            version: data.version,
            created_at_ms: data.created_at_ms,
            dict: Arc::new(dict),
            shards,
            shard_shift,
            entry_count,
            sku_count,
            promotions,
            lineage: Lineage::new(),
            gen: 1,
        })
    }

    /// The next version: this table with `delta` applied. Untouched shards and SKUs are
    /// shared with `self`. Upserted entries get `revision = delta.version`.
    pub fn apply(&self, delta: DeltaData) -> Result<Snapshot, SnapshotError> {
        self.apply_parts(
            DeltaHead {
                base_version: delta.base_version,
                version: delta.version,
                created_at_ms: delta.created_at_ms,
                promotions: delta.promotions.clone(),
            },
            delta.upserts.iter().map(EntryRef::of),
            delta.removals.iter().map(KeyRef::of),
        )
    }

    /// [`Snapshot::apply`] reading the delta in place from its encoded buffer.
    pub fn apply_view(&self, delta: &DeltaView<'_>) -> Result<Snapshot, SnapshotError> {
        self.apply_parts(
            DeltaHead {
                base_version: delta.base_version,
                version: delta.version,
                created_at_ms: delta.created_at_ms,
                promotions: delta.promotions.clone(),
            },
            delta.upserts(),
            delta.removals(),
        )
    }

    fn apply_parts<'a>(
        &self,
        head: DeltaHead,
        upserts: impl ExactSizeIterator<Item = EntryRef<'a>>,
        removals: impl ExactSizeIterator<Item = KeyRef<'a>>,
    ) -> Result<Snapshot, SnapshotError> {
        if head.base_version != self.version {
            return Err(SnapshotError::VersionConflict {
                base: head.base_version,
                current: self.version,
            });
        }
        if head.version <= head.base_version {
            return Err(SnapshotError::NotAdvancing {
                base: head.base_version,
                version: head.version,
            });
        }
        let promotions = match &head.promotions {
            Some(doc) => Some(Arc::new(SnapshotPromotions::compile(Arc::clone(doc))?)),
            None => self.promotions.clone(),
        };
        let mut state = self.lineage.lock();
        if state.tip != self.gen {
            // Not the newest version of its lineage: extend a copy of it instead.
            drop(state);
            let copy = self.detached();
            return copy.apply_parts(head, upserts, removals);
        }

        // Changes, then their order: by SKU hash (so by shard), SKU, then delta order
        // (upserts before removals).
        let hasher = hasher();
        let mut interner = Interner::new(&self.dict);
        let mut promos = promo_cache();
        let mut changes: Vec<Change<'a>> = Vec::with_capacity(upserts.len() + removals.len());
        for e in upserts {
            let variant = interner.variant(&mut promos, &e, Some(head.version));
            changes.push(Change {
                hash: hasher.hash_one(e.key.sku),
                sku: e.key.sku,
                op: Some(Op::Upsert(variant)),
            });
        }
        let dict = match interner.grown.take() {
            Some(grown) => Arc::new(grown),
            None => Arc::clone(&self.dict),
        };
        for key in removals {
            // A removal naming a dimension the table never had removes nothing.
            let ids = (
                dict.lookup(key.store),
                dict.lookup(key.channel),
                dict.lookup(key.segment),
            );
            if let (Some(store), Some(channel), Some(segment)) = ids {
                changes.push(Change {
                    hash: hasher.hash_one(key.sku),
                    sku: key.sku,
                    op: Some(Op::Remove {
                        store,
                        channel,
                        segment,
                    }),
                });
            }
        }
        let mut order: Vec<(u64, u32)> = changes
            .iter()
            .enumerate()
            .map(|(i, c)| (c.hash, i as u32))
            .collect();
        order.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| changes[a.1 as usize].sku.cmp(changes[b.1 as usize].sku))
                .then(a.1.cmp(&b.1))
        });
        // The changes themselves in that order, so the build below reads them front to
        // back: read through `order`, every group began with a cache miss on `changes`
        // (about a third of the build's own time for a 10,000-entry delta).
        let mut changes = gather(changes, &order);

        let gen = state.next_gen;
        let mut retired = Retired {
            gen,
            shards: Vec::with_capacity(changes.len()),
            records: Vec::with_capacity(changes.len()),
        };
        let mut born = Born {
            gen,
            base_gen: self.gen,
            shards: Vec::with_capacity(changes.len()),
            records: Vec::with_capacity(changes.len()),
        };
        // Changes of one SKU are one group; groups are in shard order.
        let mut groups: Vec<Group> = Vec::with_capacity(changes.len());
        let mut at = 0;
        while at < changes.len() {
            let Change { hash, sku, .. } = changes[at];
            // The hash first: the name is read (a cache miss in the delta) only for a
            // SKU with several changes.
            let end = at
                + 1
                + changes[at + 1..]
                    .iter()
                    .take_while(|c| c.hash == hash && c.sku == sku)
                    .count();
            groups.push(Group {
                hash,
                start: at,
                end,
            });
            at = end;
        }
        let group_hash = |g: usize| groups[g].hash;

        let mut shards = self.shards.clone();
        // The slots of the shard and the variants of the SKU being changed; one buffer
        // for each.
        let mut slots: Vec<Slot> = Vec::new();
        let mut variants: Vec<Variant> = Vec::new();
        let mut entry_count = self.entry_count as isize;
        let mut sku_count = self.sku_count as isize;
        let mut start = 0;
        while start < groups.len() {
            let index = shard_index(group_hash(start), self.shard_shift);
            let end = start
                + (start..groups.len())
                    .take_while(|&g| shard_index(group_hash(g), self.shard_shift) == index)
                    .count();
            slots.clear();
            slots.extend_from_slice(self.shard(index));
            for g in start..end {
                self.prefetch_ahead(&groups[g + 1..]);
                if let Some(next) = groups.get(g + 1) {
                    prefetch(changes[next.start].sku.as_ptr());
                }
                let Group {
                    hash,
                    start: group,
                    end: group_end,
                } = groups[g];
                let sku = changes[group].sku;
                let position = slots.binary_search_by(|s| {
                    s.hash
                        .cmp(&hash)
                        .then_with(|| self.record(s).sku.as_str().cmp(sku))
                });
                variants.clear();
                let old = position.ok().map(|i| {
                    let old = self.record(&slots[i]);
                    variants.extend_from_slice(&old.variants);
                    DeadRecord::of(old)
                });
                let before = variants.len() as isize;
                let mut added = false;
                for change in &mut changes[group..group_end] {
                    match change.op.take().expect("each change is used once") {
                        Op::Upsert(variant) => {
                            match variants.iter_mut().find(|v| v.same_key(&variant)) {
                                Some(existing) => *existing = variant,
                                None => {
                                    variants.push(variant);
                                    added = true;
                                }
                            }
                        }
                        Op::Remove {
                            store,
                            channel,
                            segment,
                        } => variants.retain(|v| {
                            !(v.store == store && v.channel == channel && v.segment == segment)
                        }),
                    }
                }
                entry_count += variants.len() as isize - before;
                if added {
                    sort_variants(&mut variants);
                }
                let record = (!variants.is_empty()).then(|| {
                    let record = leak_record(&mut state.pool, hash, sku, &mut variants);
                    born.records.push(record);
                    record
                });
                match (position, record) {
                    (Ok(i), None) => {
                        slots.remove(i);
                        retired.records.extend(old);
                        sku_count -= 1;
                    }
                    (Ok(i), Some(record)) => {
                        slots[i].prices = record;
                        retired.records.extend(old);
                    }
                    (Err(i), Some(record)) => {
                        slots.insert(
                            i,
                            Slot {
                                hash,
                                prices: record,
                            },
                        );
                        sku_count += 1;
                    }
                    (Err(_), None) => {}
                }
            }
            let shard = leak_shard(&mut state.pool, &slots);
            retired.shards.push(self.shards[index]);
            born.shards.push(shard);
            shards[index] = shard;
            start = end;
        }
        debug_assert!(entry_count >= 0 && sku_count >= 0);
        state.next_gen += 1;
        state.tip = gen;
        state.live.insert(gen);
        state.retired.push_back(retired);
        state.tip_born = Some(born);
        drop(state);
        Ok(Snapshot {
            version: head.version,
            created_at_ms: head.created_at_ms,
            dict,
            shards,
            shard_shift: self.shard_shift,
            entry_count: entry_count as usize,
            sku_count: sku_count as usize,
            promotions,
            lineage: Arc::clone(&self.lineage),
            gen,
        })
    }

    /// A copy of this version (every record copied) as the first of a new lineage.
    fn detached(&self) -> Snapshot {
        let mut pool = BlockPool::default();
        let mut slots = Vec::new();
        let mut variants = Vec::new();
        let mut shards = Vec::with_capacity(self.shards.len());
        for index in 0..self.shards.len() {
            slots.clear();
            for slot in self.shard(index) {
                let record = self.record(slot);
                variants.extend_from_slice(&record.variants);
                let prices = leak_record(&mut pool, slot.hash, &record.sku, &mut variants);
                slots.push(Slot {
                    hash: slot.hash,
                    prices,
                });
            }
            shards.push(leak_shard(&mut pool, &slots));
        }
        let shards = shards.into_boxed_slice();
        Snapshot {
            version: self.version,
            created_at_ms: self.created_at_ms,
            dict: Arc::clone(&self.dict),
            shards,
            shard_shift: self.shard_shift,
            entry_count: self.entry_count,
            sku_count: self.sku_count,
            promotions: self.promotions.clone(),
            lineage: Lineage::new(),
            gen: 1,
        }
    }

    #[inline]
    fn shard(&self, index: usize) -> &[Slot] {
        // SAFETY: the lineage frees a shard only once no version that holds it is
        // alive, and `self` holds it.
        unsafe { self.shards[index].as_ref() }
    }

    /// The record of a slot of one of this version's shards.
    #[inline]
    fn record(&self, slot: &Slot) -> &SkuPrices {
        // SAFETY: as for `shard`: `self` holds the record while it is borrowed.
        unsafe { &*record_raw(slot.prices) }
    }

    /// Starts loading what the next groups (`ahead`, nearest first) will read, one step
    /// further for each group ahead: the shard table entry, the shard, the record, its
    /// variants. A delta's SKUs are scattered over the table, so without this every
    /// group waits for four cache misses in a row; with it they overlap with the work
    /// on the current group.
    #[inline]
    fn prefetch_ahead(&self, ahead: &[Group]) {
        let hash = |n: usize| ahead.get(n - 1).map(|g| g.hash);
        let slot = |hash: u64| {
            self.shard(shard_index(hash, self.shard_shift))
                .iter()
                .find(|s| s.hash == hash)
        };
        if let Some(hash) = hash(4) {
            prefetch(&self.shards[shard_index(hash, self.shard_shift)]);
        }
        if let Some(hash) = hash(3) {
            prefetch(self.shards[shard_index(hash, self.shard_shift)].as_ptr() as *const u8);
        }
        if let Some(slot) = hash(2).and_then(slot) {
            prefetch(slot.prices.as_ptr());
        }
        if let Some(slot) = hash(1).and_then(slot) {
            let variants = &self.record(slot).variants;
            let start = variants.as_ptr() as *const u8;
            for offset in (0..std::mem::size_of_val::<[Variant]>(variants)).step_by(64) {
                prefetch(start.wrapping_add(offset));
            }
        }
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// When the control plane made this version (Unix ms).
    pub fn created_at_ms(&self) -> i64 {
        self.created_at_ms
    }

    pub fn entry_count(&self) -> usize {
        self.entry_count
    }

    pub fn sku_count(&self) -> usize {
        self.sku_count
    }

    pub fn dictionary(&self) -> &Dictionary {
        &self.dict
    }

    /// The compiled promotions, when the snapshot carries a promotions document.
    #[inline]
    pub fn promotions(&self) -> Option<&Arc<SnapshotPromotions>> {
        self.promotions.as_ref()
    }

    /// The shelf price of `r` under the promotion set; `None` without promotions (the
    /// entry's own promotion tag then decides).
    #[inline]
    pub fn shelf(&self, r: &Resolved<'_>, now_ms: i64) -> Option<Shelf> {
        self.promotions
            .as_ref()
            .map(|promotions| promotions.shelf(self, r, now_ms))
    }

    /// Resolves requested dimensions (`None` = not given) once per request.
    #[inline]
    pub fn query(
        &self,
        store: Option<&str>,
        channel: Option<&str>,
        segment: Option<&str>,
    ) -> Query {
        let id = |v: Option<&str>| match v {
            None => ANY_ID,
            Some(v) if v == ANY => ANY_ID,
            Some(v) => self.dict.lookup(v).unwrap_or(UNKNOWN_ID),
        };
        Query {
            store: id(store),
            channel: id(channel),
            segment: id(segment),
        }
    }

    /// All variants of a SKU, if the table has it.
    #[inline]
    pub fn sku(&self, sku: &str) -> Option<&SkuPrices> {
        let hash = sku_hash(sku);
        let slots = self.shard(shard_index(hash, self.shard_shift));
        slots
            .binary_search_by(|s| {
                s.hash
                    .cmp(&hash)
                    .then_with(|| self.record(s).sku.as_str().cmp(sku))
            })
            .ok()
            .map(|i| self.record(&slots[i]))
    }

    /// The most specific variant of `sku` matching `query` and effective at `now_ms`.
    #[inline]
    pub fn resolve(&self, sku: &str, query: Query, now_ms: i64) -> Option<Resolved<'_>> {
        let prices = self.sku(sku)?;
        let mut valid_until_ms = i64::MAX;
        for variant in prices.variants.iter() {
            if !variant.matches(query.store, query.channel, query.segment) {
                continue;
            }
            let entry = &variant.entry;
            if !entry.is_effective_at(now_ms) {
                // A more specific entry that opens later will take over then.
                if entry.valid_from_ms > now_ms {
                    valid_until_ms = valid_until_ms.min(entry.valid_from_ms);
                }
                continue;
            }
            valid_until_ms = valid_until_ms.min(entry.valid_until_ms);
            if let Some(promo) = &entry.promotion {
                if promo.is_active_at(now_ms) {
                    valid_until_ms = valid_until_ms.min(promo.ends_at_ms);
                } else if promo.starts_at_ms > now_ms {
                    valid_until_ms = valid_until_ms.min(promo.starts_at_ms);
                }
            }
            return Some(Resolved {
                sku: prices,
                variant,
                valid_until_ms,
            });
        }
        None
    }

    /// Every entry, as domain values (for persisting and exporting; not a hot path).
    pub fn entries(&self) -> impl ExactSizeIterator<Item = PriceEntry> + '_ {
        let iter = (0..self.shards.len())
            .flat_map(move |index| self.shard(index).iter())
            .map(move |slot| self.record(slot))
            .flat_map(move |prices| {
                prices
                    .variants
                    .iter()
                    .map(move |v| self.to_entry(&prices.sku, v))
            });
        ExactIter {
            iter,
            remaining: self.entry_count,
        }
    }

    fn to_entry(&self, sku: &str, v: &Variant) -> PriceEntry {
        let dim =
            |id: u32| Dimension::new(self.dict.name(id)).expect("interned names were validated");
        let e = &v.entry;
        PriceEntry {
            key: PriceKey {
                sku: Sku::new(sku).expect("stored SKUs were validated"),
                store: dim(v.store),
                channel: dim(v.channel),
                segment: dim(v.segment),
            },
            currency: e.currency,
            list_price_minor: e.list_price_minor,
            price_minor: e.price_minor,
            floor_minor: e.floor_minor,
            promotion: e.promotion.as_deref().map(|p| PromotionTag {
                id: p.id.to_string(),
                label: p.label.to_string(),
                price_minor: p.price_minor,
                starts_at_ms: p.starts_at_ms,
                ends_at_ms: p.ends_at_ms,
            }),
            valid_from_ms: (e.valid_from_ms != i64::MIN).then_some(e.valid_from_ms),
            valid_until_ms: (e.valid_until_ms != i64::MAX).then_some(e.valid_until_ms),
            revision: e.revision,
        }
    }

    /// The whole table as a snapshot (for persisting and exporting).
    pub fn to_data(&self) -> SnapshotData {
        SnapshotData {
            version: self.version,
            created_at_ms: self.created_at_ms,
            entries: self.entries().collect(),
            promotions: self.promotions.as_ref().map(|p| Arc::clone(&p.doc)),
        }
    }
}

/// Wraps an iterator whose length is known but not visible to the type system.
struct ExactIter<I> {
    iter: I,
    remaining: usize,
}

impl<I: Iterator> Iterator for ExactIter<I> {
    type Item = I::Item;
    fn next(&mut self) -> Option<I::Item> {
        let item = self.iter.next()?;
        self.remaining -= 1;
        Some(item)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl<I: Iterator> ExactSizeIterator for ExactIter<I> {}

#[inline]
fn shard_index(hash: u64, shift: u32) -> usize {
    // shift == 64 for a single shard; `checked_shr` keeps that case at index 0.
    hash.checked_shr(shift).unwrap_or(0) as usize
}

fn count_groups(rows: &[(u64, EntryRef<'_>)]) -> usize {
    rows.iter()
        .enumerate()
        .filter(|(i, (h, e))| *i == 0 || rows[i - 1].0 != *h || rows[i - 1].1.key.sku != e.key.sku)
        .count()
}

/// The entry of a variant (promotions shared through `promos`).
fn entry_from<'a>(promos: &mut PromoCache<'a>, e: &EntryRef<'a>, revision: Option<u64>) -> Entry {
    let promotion = e.promotion.map(|p| {
        if let Some(shared) = promos.get(&p) {
            return Arc::clone(shared);
        }
        let promo = Arc::new(Promo {
            id_json: json_escape(p.id).into(),
            label_json: json_escape(p.label).into(),
            starts_at_json: crate::render::rfc3339_json(p.starts_at_ms).into(),
            ends_at_json: crate::render::rfc3339_json(p.ends_at_ms).into(),
            id: p.id.into(),
            label: p.label.into(),
            price_minor: p.price_minor,
            starts_at_ms: p.starts_at_ms,
            ends_at_ms: p.ends_at_ms,
        });
        promos.insert(p, Arc::clone(&promo));
        promo
    });
    Entry {
        currency: e.currency,
        list_price_minor: e.list_price_minor,
        price_minor: e.price_minor,
        floor_minor: e.floor_minor,
        valid_from_ms: e.valid_from_ms.unwrap_or(i64::MIN),
        valid_until_ms: e.valid_until_ms.unwrap_or(i64::MAX),
        revision: revision.unwrap_or(e.revision),
        promotion,
    }
}

/// Interns promotions while building: every variant of a SKU usually carries the same
/// promotion, so it is allocated once and shared.
type PromoCache<'a> = HashMap<PromotionRef<'a>, Arc<Promo>, RandomState>;

fn promo_cache<'a>() -> PromoCache<'a> {
    HashMap::with_hasher(hasher())
}

/// What a delta says, besides its entries.
struct DeltaHead {
    base_version: u64,
    version: u64,
    created_at_ms: i64,
    promotions: Option<Arc<PromotionsDoc>>,
}

enum Op {
    Upsert(Variant),
    Remove {
        store: u32,
        channel: u32,
        segment: u32,
    },
}

struct Change<'a> {
    hash: u64,
    sku: &'a str,
    /// Taken when applied.
    op: Option<Op>,
}

/// The changes of one SKU: `changes[start..end]` of a delta's sorted changes.
#[derive(Clone, Copy)]
struct Group {
    hash: u64,
    start: usize,
    end: usize,
}

/// `changes` in `order` (indices into it). The reads are scattered, so each is
/// prefetched a few steps ahead; they do not depend on one another and overlap.
fn gather<'a>(mut changes: Vec<Change<'a>>, order: &[(u64, u32)]) -> Vec<Change<'a>> {
    const AHEAD: usize = 8;
    let mut sorted = Vec::with_capacity(order.len());
    for (k, &(_, i)) in order.iter().enumerate() {
        if let Some(&(_, later)) = order.get(k + AHEAD) {
            prefetch(&changes[later as usize]);
        }
        let change = &mut changes[i as usize];
        sorted.push(Change {
            hash: change.hash,
            sku: change.sku,
            op: change.op.take(),
        });
    }
    sorted
}

/// Escapes a string for inclusion inside JSON quotes.
pub fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{entry, key};
    use std::cell::Cell;

    thread_local! {
        /// Records made minus records freed on this thread (tests build and drop
        /// their tables on one thread).
        pub(super) static LIVE_RECORDS: Cell<isize> = const { Cell::new(0) };
    }

    fn live_records() -> isize {
        LIVE_RECORDS.with(Cell::get)
    }

    #[test]
    fn a_record_is_laid_out_as_its_type_says() {
        let before = live_records();
        for len in [0, 1, 2, 9, 33] {
            let mut variants: Vec<Variant> = (0..len)
                .map(|i| Variant {
                    store: i,
                    channel: 0,
                    segment: 0,
                    entry: Entry {
                        currency: Currency::EUR,
                        list_price_minor: 10,
                        price_minor: i as i64,
                        floor_minor: 0,
                        valid_from_ms: i64::MIN,
                        valid_until_ms: i64::MAX,
                        revision: 1,
                        promotion: None,
                    },
                })
                .collect();
            let mut pool = BlockPool::default();
            let record = leak_record(&mut pool, 7, "SKU-1", &mut variants);
            assert!(variants.is_empty());
            // SAFETY: just made, freed below.
            let whole = unsafe { &*record_raw(record) };
            assert_eq!(Layout::for_value(whole), record_layout(len as usize));
            let offset = whole.variants.as_ptr() as usize - record.as_ptr() as usize;
            assert_eq!(offset, std::mem::size_of::<RecordHead>());
            assert_eq!((whole.hash, &*whole.sku), (7, "SKU-1"));
            assert!(whole.variants.iter().map(|v| v.store).eq(0..len));
            // SAFETY: made above, reachable from nothing else.
            unsafe { free_record(&mut pool, record) };
        }
        assert_eq!(live_records(), before);
    }

    #[test]
    fn a_freed_record_drops_its_promotions() {
        let promo = Arc::new(Promo {
            id: "p".into(),
            label: "P".into(),
            id_json: "\"p\"".into(),
            label_json: "\"P\"".into(),
            starts_at_json: "\"\"".into(),
            ends_at_json: "\"\"".into(),
            price_minor: 5,
            starts_at_ms: 0,
            ends_at_ms: 1,
        });
        let variant = |store, promotion| Variant {
            store,
            channel: 0,
            segment: 0,
            entry: Entry {
                currency: Currency::EUR,
                list_price_minor: 10,
                price_minor: 9,
                floor_minor: 0,
                valid_from_ms: i64::MIN,
                valid_until_ms: i64::MAX,
                revision: 1,
                promotion,
            },
        };
        let mut pool = BlockPool::default();
        let mut variants = vec![variant(1, None), variant(0, Some(Arc::clone(&promo)))];
        let record = leak_record(&mut pool, 1, "SKU-P", &mut variants);
        assert_eq!(Arc::strong_count(&promo), 2);
        // SAFETY: made above, reachable from nothing else.
        unsafe { free_record(&mut pool, record) };
        assert_eq!(Arc::strong_count(&promo), 1);
    }

    #[test]
    fn freed_blocks_are_reused_by_size_and_the_pool_is_bounded() {
        let mut pool = BlockPool::default();
        let (small, large) = (record_layout(2), record_layout(9));
        let a = pool.alloc(small);
        let b = pool.alloc(large);
        // SAFETY (each `free` here): allocated just above at that layout, unused.
        unsafe { pool.free(a, small) };
        unsafe { pool.free(b, large) };
        assert_eq!(pool.bytes, small.size() + large.size());
        assert_eq!(
            pool.alloc(large),
            b,
            "a block of the size asked for comes back"
        );
        assert_eq!(pool.alloc(small), a);
        assert_eq!(pool.bytes, 0);
        unsafe { pool.free(a, small) };
        unsafe { pool.free(b, large) };

        let biggest = Layout::from_size_align(BlockPool::MAX_SIZE, 8).unwrap();
        let blocks: Vec<_> = (0..BlockPool::MAX_BYTES / BlockPool::MAX_SIZE + 2)
            .map(|_| pool.alloc(biggest))
            .collect();
        for block in blocks {
            unsafe { pool.free(block, biggest) };
        }
        assert!(
            pool.bytes <= BlockPool::MAX_BYTES,
            "{} bytes kept",
            pool.bytes
        );
        let huge = Layout::from_size_align(BlockPool::MAX_SIZE + 8, 8).unwrap();
        let before = pool.bytes;
        let block = pool.alloc(huge);
        unsafe { pool.free(block, huge) };
        assert_eq!(
            pool.bytes, before,
            "blocks over MAX_SIZE go back to the allocator"
        );
    }

    fn table(entries: Vec<PriceEntry>) -> Snapshot {
        Snapshot::build(SnapshotData {
            version: 1,
            created_at_ms: 0,
            promotions: None,
            entries,
        })
        .unwrap()
    }

    fn price(
        s: &Snapshot,
        sku: &str,
        store: Option<&str>,
        channel: Option<&str>,
        segment: Option<&str>,
    ) -> Option<i64> {
        s.resolve(sku, s.query(store, channel, segment), 0)
            .map(|r| r.variant.entry.price_minor)
    }

    /// Every rank of the fallback table in turn: remove the most specific entry and the
    /// next one answers.
    #[test]
    fn fallback_follows_the_documented_order() {
        let dims = [
            ("s1", "web", "gold", 7),
            ("s1", "web", "*", 6),
            ("s1", "*", "gold", 5),
            ("s1", "*", "*", 4),
            ("*", "web", "gold", 3),
            ("*", "web", "*", 2),
            ("*", "*", "gold", 1),
            ("*", "*", "*", 0),
        ];
        let mut entries: Vec<_> = dims
            .iter()
            .map(|(s, c, g, p)| entry(key("A", s, c, g), *p))
            .collect();
        for expected in (0..8).rev() {
            let s = table(entries.clone());
            assert_eq!(
                price(&s, "A", Some("s1"), Some("web"), Some("gold")),
                Some(expected)
            );
            entries.retain(|e| e.price_minor != expected);
        }
    }

    #[test]
    fn unknown_and_missing_dimensions_fall_back_to_wildcards() {
        let s = table(vec![
            entry(key("A", "*", "*", "*"), 100),
            entry(key("A", "s1", "*", "*"), 90),
        ]);
        assert_eq!(price(&s, "A", None, None, None), Some(100));
        assert_eq!(
            price(&s, "A", Some("nowhere"), Some("web"), None),
            Some(100)
        );
        assert_eq!(
            price(&s, "A", Some("s1"), Some("web"), Some("gold")),
            Some(90)
        );
        assert_eq!(price(&s, "B", None, None, None), None);
    }

    #[test]
    fn a_sku_without_a_matching_variant_has_no_price() {
        let s = table(vec![entry(key("A", "s1", "*", "*"), 90)]);
        assert_eq!(price(&s, "A", Some("s2"), None, None), None);
        assert_eq!(price(&s, "A", None, None, None), None);
    }

    #[test]
    fn entries_outside_their_window_are_skipped_and_bound_validity() {
        let mut future = entry(key("A", "s1", "*", "*"), 80);
        future.valid_from_ms = Some(1_000);
        let s = table(vec![entry(key("A", "*", "*", "*"), 100), future]);
        let r = s.resolve("A", s.query(Some("s1"), None, None), 0).unwrap();
        assert_eq!(r.variant.entry.price_minor, 100);
        assert_eq!(r.valid_until_ms, 1_000);
        let r = s
            .resolve("A", s.query(Some("s1"), None, None), 1_000)
            .unwrap();
        assert_eq!(r.variant.entry.price_minor, 80);
        assert_eq!(r.valid_until_ms, i64::MAX);
    }

    #[test]
    fn duplicate_keys_are_rejected() {
        let err = Snapshot::build(SnapshotData {
            version: 1,
            created_at_ms: 0,
            promotions: None,
            entries: vec![
                entry(key("A", "s1", "*", "*"), 1),
                entry(key("A", "s1", "*", "*"), 2),
            ],
        })
        .unwrap_err();
        assert_eq!(err, SnapshotError::DuplicateKey("A@s1/*/*".into()));
    }

    fn many(n: usize) -> Vec<PriceEntry> {
        (0..n)
            .flat_map(|i| {
                let sku = format!("SKU-{i}");
                [
                    entry(key(&sku, "*", "*", "*"), 1000 + i as i64),
                    entry(key(&sku, "s1", "web", "*"), 900 + i as i64),
                ]
            })
            .collect()
    }

    #[test]
    fn delta_upserts_removes_and_shares_untouched_shards() {
        let base = table(many(1_000));
        let delta = DeltaData {
            base_version: 1,
            version: 2,
            created_at_ms: 5,
            promotions: None,
            upserts: vec![
                entry(key("SKU-1", "*", "*", "*"), 7),
                entry(key("NEW", "s9", "app", "*"), 3),
            ],
            removals: vec![
                key("SKU-2", "s1", "web", "*"),
                key("SKU-3", "*", "*", "*"),
                key("SKU-3", "s1", "web", "*"),
            ],
        };
        let next = base.apply(delta).unwrap();
        assert_eq!(next.version(), 2);
        assert_eq!(next.entry_count(), base.entry_count() + 1 - 3);
        assert_eq!(next.sku_count(), base.sku_count() + 1 - 1);
        assert_eq!(price(&next, "SKU-1", None, None, None), Some(7));
        assert_eq!(
            next.resolve("SKU-1", next.query(None, None, None), 0)
                .unwrap()
                .variant
                .entry
                .revision,
            2
        );
        assert_eq!(price(&next, "NEW", Some("s9"), Some("app"), None), Some(3));
        assert_eq!(
            price(&next, "SKU-2", Some("s1"), Some("web"), None),
            Some(1002),
            "falls back after removal"
        );
        assert_eq!(price(&next, "SKU-3", None, None, None), None);
        // The base is unchanged.
        assert_eq!(price(&base, "SKU-1", None, None, None), Some(1001));
        assert_eq!(price(&base, "SKU-3", None, None, None), Some(1003));
        // Most shards are the same allocation in both versions.
        let shared = base
            .shards
            .iter()
            .zip(next.shards.iter())
            .filter(|(a, b)| std::ptr::eq(a.as_ptr(), b.as_ptr()))
            .count();
        assert!(
            shared >= base.shards.len() - 4,
            "{shared} of {} shared",
            base.shards.len()
        );
    }

    #[test]
    fn delta_must_follow_the_current_version() {
        let base = table(many(10));
        let stale = DeltaData {
            base_version: 0,
            version: 2,
            created_at_ms: 0,
            promotions: None,
            upserts: vec![],
            removals: vec![],
        };
        assert_eq!(
            base.apply(stale).unwrap_err(),
            SnapshotError::VersionConflict {
                base: 0,
                current: 1
            }
        );
        let backwards = DeltaData {
            base_version: 1,
            version: 1,
            created_at_ms: 0,
            promotions: None,
            upserts: vec![],
            removals: vec![],
        };
        assert!(matches!(
            base.apply(backwards),
            Err(SnapshotError::NotAdvancing { .. })
        ));
    }

    #[test]
    fn entries_round_trip_through_the_table() {
        let mut input = many(50);
        input[3].promotion = Some(PromotionTag {
            id: "p".into(),
            label: "a \"quoted\" label".into(),
            price_minor: 5,
            starts_at_ms: 1,
            ends_at_ms: 2,
        });
        input[4].valid_until_ms = Some(99);
        let s = table(input.clone());
        let mut out: Vec<_> = s.entries().collect();
        assert_eq!(out.len(), s.entry_count());
        out.sort_by(|a, b| a.key.cmp(&b.key));
        input.sort_by(|a, b| a.key.cmp(&b.key));
        assert_eq!(out, input);
    }

    #[test]
    fn json_escape_handles_quotes_and_controls() {
        assert_eq!(json_escape("a\"b\\c\n\u{1}"), "a\\\"b\\\\c\\n\\u0001");
    }

    #[test]
    fn single_shard_tables_work() {
        let s = table(vec![entry(key("A", "*", "*", "*"), 1)]);
        assert_eq!(s.shards.len(), 1);
        assert_eq!(price(&s, "A", None, None, None), Some(1));
    }

    /// A delta repricing chain-wide `SKU-{i}` for `i` in `skus`, and removing the
    /// store variant of `remove`.
    fn reprice(base: u64, skus: std::ops::Range<usize>, price: i64, remove: usize) -> DeltaData {
        DeltaData {
            base_version: base,
            version: base + 1,
            created_at_ms: 0,
            promotions: None,
            upserts: skus
                .map(|i| entry(key(&format!("SKU-{i}"), "*", "*", "*"), price))
                .collect(),
            removals: vec![key(&format!("SKU-{remove}"), "s1", "web", "*")],
        }
    }

    fn all_entries(s: &Snapshot) -> Vec<PriceEntry> {
        let mut entries: Vec<_> = s.entries().collect();
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        entries
    }

    /// Versions of one lineage dropped in every order the store and its callers can
    /// produce: each stays readable while alive, and everything made is freed once.
    #[test]
    fn versions_free_what_they_shared_exactly_once_in_any_drop_order() {
        let before = live_records();
        {
            // Oldest first (the store's order), with a reader holding an old version.
            let v1 = table(many(200));
            let v1_entries = all_entries(&v1);
            let v2 = v1.apply(reprice(1, 0..50, 7, 60)).unwrap();
            let v3 = v2.apply(reprice(2, 25..75, 8, 61)).unwrap();
            let v3_entries = all_entries(&v3);
            drop(v2);
            assert_eq!(all_entries(&v1), v1_entries, "v1 outlives its successor");
            drop(v1);
            let v4 = v3.apply(reprice(3, 100..120, 9, 62)).unwrap();
            drop(v3);
            assert_eq!(price(&v4, "SKU-30", None, None, None), Some(8));
            assert_eq!(price(&v4, "SKU-10", None, None, None), Some(7));
            assert_eq!(price(&v4, "SKU-110", None, None, None), Some(9));
            assert_eq!(v4.entry_count(), v3_entries.len() - 1);
        }
        assert_eq!(live_records(), before, "oldest-first drops");
        {
            // Newest first: a built version that is never swapped in is undone, and the
            // base can be extended again.
            let v1 = table(many(200));
            let v1_entries = all_entries(&v1);
            let v2 = v1.apply(reprice(1, 0..50, 7, 60)).unwrap();
            drop(v2);
            assert_eq!(all_entries(&v1), v1_entries);
            let v2 = v1.apply(reprice(1, 10..20, 5, 61)).unwrap();
            assert_eq!(price(&v2, "SKU-10", None, None, None), Some(5));
            assert_eq!(price(&v2, "SKU-30", None, None, None), Some(1030));
            drop(v1);
            drop(v2);
        }
        assert_eq!(live_records(), before, "newest-first drops");
        {
            // Two successors of one base, both alive: the second extends a copy.
            let v1 = table(many(100));
            let a = v1.apply(reprice(1, 0..10, 1, 50)).unwrap();
            let b = v1.apply(reprice(1, 5..15, 2, 51)).unwrap();
            assert_eq!(price(&a, "SKU-7", None, None, None), Some(1));
            assert_eq!(price(&b, "SKU-7", None, None, None), Some(2));
            assert_eq!(price(&a, "SKU-12", None, None, None), Some(1012));
            assert_eq!(price(&v1, "SKU-7", None, None, None), Some(1007));
            drop(a);
            let c = b.apply(reprice(2, 0..3, 3, 52)).unwrap();
            drop(v1);
            drop(b);
            assert_eq!(price(&c, "SKU-1", None, None, None), Some(3));
            assert_eq!(price(&c, "SKU-7", None, None, None), Some(2));
        }
        assert_eq!(live_records(), before, "forked lineages");
        {
            // The middle of three goes first, then the tip while the oldest is alive.
            let v1 = table(many(100));
            let v2 = v1.apply(reprice(1, 0..10, 1, 50)).unwrap();
            let v3 = v2.apply(reprice(2, 0..20, 2, 51)).unwrap();
            drop(v2);
            drop(v3);
            assert_eq!(price(&v1, "SKU-5", None, None, None), Some(1005));
            let v4 = v1.apply(reprice(1, 0..5, 4, 52)).unwrap();
            assert_eq!(price(&v4, "SKU-3", None, None, None), Some(4));
        }
        assert_eq!(live_records(), before, "tip dropped after its base");
    }

    #[test]
    fn removing_every_variant_removes_the_sku_and_new_skus_land_in_order() {
        let before = live_records();
        {
            let base = table(many(300));
            let mut delta = reprice(1, 0..0, 0, 0);
            delta.removals = vec![key("SKU-9", "*", "*", "*"), key("SKU-9", "s1", "web", "*")];
            delta.upserts = (0..300)
                .map(|i| entry(key(&format!("NEW-{i}"), "s2", "*", "gold"), i))
                .collect();
            let next = base.apply(delta).unwrap();
            assert!(next.sku("SKU-9").is_none());
            assert_eq!(next.sku_count(), base.sku_count() - 1 + 300);
            for i in 0..300 {
                assert_eq!(
                    price(&next, &format!("NEW-{i}"), Some("s2"), None, Some("gold")),
                    Some(i)
                );
            }
            for index in 0..next.shards.len() {
                let slots = next.shard(index);
                assert!(slots.windows(2).all(|w| {
                    (w[0].hash, &*next.record(&w[0]).sku) < (w[1].hash, &*next.record(&w[1]).sku)
                }));
            }
        }
        assert_eq!(live_records(), before);
    }
}
