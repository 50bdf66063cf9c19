//! The immutable, versioned price table the edge serves from.
//!
//! Layout: SKUs are hashed (fixed-seed ahash) into `2^k` shards chosen from the top bits
//! of the hash; a shard is a slice of `Arc<SkuPrices>` sorted by `(hash, sku)`; a
//! `SkuPrices` holds every variant (store × channel × segment) of one SKU, sorted most
//! specific first so the first match is the answer (see `edgeprice_pricing::key` for the
//! fallback order). Store, channel and segment names are interned into a [`Dictionary`]
//! so a variant is three `u32`s and a request resolves its dimensions once.
//!
//! A delta produces the next version by structural sharing: the shard table is copied
//! (one pointer per shard), only shards containing a changed SKU are rebuilt, and inside
//! them only the changed `SkuPrices` are new — every other `Arc` is shared with the
//! previous version. A 10,000-entry delta on a 1,000,000-entry table therefore touches
//! about 1% of the data.
//!
//! A snapshot also holds its compiled promotions ([`SnapshotPromotions`]): compiled
//! once, on the writer thread, when a snapshot or delta brings a promotions document,
//! and shared (one `Arc`) by every later version that does not replace it.
//!
//! Nothing here does I/O or takes a lock; lookups do not allocate.

use std::collections::HashMap;
use std::sync::Arc;

use ahash::RandomState;
use chrono_tz::Tz;
use edgeprice_pricing::key::specificity;
use edgeprice_pricing::promo::{shelf_price, CartContext, CartLine, PromotionSet};
use edgeprice_pricing::{Currency, Dimension, PriceEntry, PriceKey, PromotionTag, Sku, ANY};
use edgeprice_schemas::codec::{DeltaData, PromotionsDoc, SnapshotData};

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

    /// The shelf price of `r` at `now_ms`: one unit, automatic item-level promotions,
    /// for the entry's own store, channel and segment.
    pub fn shelf(&self, snapshot: &Snapshot, r: &Resolved<'_>, now_ms: i64) -> Shelf {
        let dict = snapshot.dictionary();
        let v = r.variant;
        let e = &v.entry;
        let fallback = Shelf {
            price_minor: e.price_minor.max(e.floor_minor),
            promotion: None,
        };
        let (Ok(sku), Ok(store), Ok(channel), Ok(segment)) = (
            Sku::new(&r.sku.sku),
            Dimension::new(dict.name(v.store)),
            Dimension::new(dict.name(v.channel)),
            Dimension::new(dict.name(v.segment)),
        ) else {
            return fallback;
        };
        let line = CartLine {
            sku,
            quantity: 1,
            unit_list_price_minor: e.list_price_minor,
            unit_price_minor: e.price_minor,
            unit_floor_minor: e.floor_minor,
            category: self.category(&r.sku.sku).map(str::to_owned),
        };
        let mut ctx = CartContext::new(e.currency, now_ms, self.time_zone(store.as_str()));
        ctx.store = store;
        ctx.channel = channel;
        ctx.segment = segment;
        ctx.explain = false;
        let Ok(shelf) = shelf_price(&self.set, &line, &ctx) else {
            return fallback;
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
            promotion: best.map(|p| (Arc::clone(p), shelf.unit_price_minor)),
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

    fn contains_all<'a>(&self, mut names: impl Iterator<Item = &'a str>) -> bool {
        names.all(|n| self.ids.contains_key(n))
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

/// All variants of one SKU, most specific first.
#[derive(Debug)]
pub struct SkuPrices {
    pub hash: u64,
    pub sku: Box<str>,
    pub variants: Box<[Variant]>,
}

impl SkuPrices {
    fn new(hash: u64, sku: Box<str>, mut variants: Vec<Variant>) -> SkuPrices {
        // Stable order: rank descending, then ids, so equal inputs build equal tables.
        variants.sort_by(|a, b| {
            b.rank()
                .cmp(&a.rank())
                .then(a.store.cmp(&b.store))
                .then(a.channel.cmp(&b.channel))
                .then(a.segment.cmp(&b.segment))
        });
        SkuPrices {
            hash,
            sku,
            variants: variants.into_boxed_slice(),
        }
    }
}

#[derive(Debug, Default)]
struct Shard {
    skus: Box<[Arc<SkuPrices>]>,
}

impl Shard {
    #[inline]
    fn find(&self, hash: u64, sku: &str) -> Result<usize, usize> {
        self.skus
            .binary_search_by(|s| s.hash.cmp(&hash).then_with(|| (*s.sku).cmp(sku)))
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
#[derive(Debug)]
pub struct Snapshot {
    version: u64,
    created_at_ms: i64,
    dict: Arc<Dictionary>,
    shards: Box<[Arc<Shard>]>,
    /// `hash >> shard_shift` is the shard index.
    shard_shift: u32,
    entry_count: usize,
    sku_count: usize,
    promotions: Option<Arc<SnapshotPromotions>>,
}

impl Snapshot {
    /// Builds a table from a full snapshot.
    pub fn build(data: SnapshotData) -> Result<Snapshot, SnapshotError> {
        let promotions = data
            .promotions
            .map(|doc| SnapshotPromotions::compile(doc).map(Arc::new))
            .transpose()?;
        let mut dict = Dictionary::new();
        let hasher = hasher();
        let mut rows: Vec<(u64, PriceEntry)> = data
            .entries
            .into_iter()
            .map(|e| (hasher.hash_one(e.key.sku.as_str()), e))
            .collect();
        rows.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.key.sku.cmp(&b.1.key.sku)));

        let sku_count = count_groups(&rows);
        let shard_bits = (sku_count / SKUS_PER_SHARD)
            .max(1)
            .next_power_of_two()
            .trailing_zeros();
        let shard_shift = 64 - shard_bits;
        let mut shard_lists: Vec<Vec<Arc<SkuPrices>>> =
            (0..1usize << shard_bits).map(|_| Vec::new()).collect();

        let entry_count = rows.len();
        let mut promos = promo_cache();
        let mut rows = rows.into_iter().peekable();
        while let Some((hash, first)) = rows.next() {
            let (sku, first) = variant_from(&mut |n| dict.intern(n), &mut promos, first, None);
            let sku: Box<str> = String::from(sku).into_boxed_str();
            let mut variants = vec![first];
            while let Some((_, next)) =
                rows.next_if(|(h, e)| *h == hash && e.key.sku.as_str() == &*sku)
            {
                let (_, variant) = variant_from(&mut |n| dict.intern(n), &mut promos, next, None);
                if variants.iter().any(|v| v.same_key(&variant)) {
                    return Err(SnapshotError::DuplicateKey(format!(
                        "{sku}@{}/{}/{}",
                        dict.name(variant.store),
                        dict.name(variant.channel),
                        dict.name(variant.segment)
                    )));
                }
                variants.push(variant);
            }
            let index = shard_index(hash, shard_shift);
            shard_lists[index].push(Arc::new(SkuPrices::new(hash, sku, variants)));
        }
        let shards = shard_lists
            .into_iter()
            .map(|skus| {
                Arc::new(Shard {
                    skus: skus.into_boxed_slice(),
                })
            })
            .collect();
        Ok(Snapshot {
            version: data.version,
            created_at_ms: data.created_at_ms,
            dict: Arc::new(dict),
            shards,
            shard_shift,
            entry_count,
            sku_count,
            promotions,
        })
    }

    /// The next version: this table with `delta` applied. Untouched shards and SKUs are
    /// shared with `self`. Upserted entries get `revision = delta.version`.
    pub fn apply(&self, delta: DeltaData) -> Result<Snapshot, SnapshotError> {
        if delta.base_version != self.version {
            return Err(SnapshotError::VersionConflict {
                base: delta.base_version,
                current: self.version,
            });
        }
        if delta.version <= delta.base_version {
            return Err(SnapshotError::NotAdvancing {
                base: delta.base_version,
                version: delta.version,
            });
        }
        let promotions = match delta.promotions {
            Some(doc) => Some(Arc::new(SnapshotPromotions::compile(doc)?)),
            None => self.promotions.clone(),
        };

        // Copy the dictionary only when the delta names something new.
        let upsert_dims = delta.upserts.iter().flat_map(|e| {
            [
                e.key.store.as_str(),
                e.key.channel.as_str(),
                e.key.segment.as_str(),
            ]
        });
        let mut grown = (!self.dict.contains_all(upsert_dims)).then(|| (*self.dict).clone());

        // Changes grouped by SKU, SKUs grouped by shard.
        let hasher = hasher();
        let mut changes: Vec<(u64, Change)> =
            Vec::with_capacity(delta.upserts.len() + delta.removals.len());
        let mut promos = promo_cache();
        for entry in delta.upserts {
            let hash = hasher.hash_one(entry.key.sku.as_str());
            let (sku, variant) = match &mut grown {
                Some(dict) => variant_from(
                    &mut |n| dict.intern(n),
                    &mut promos,
                    entry,
                    Some(delta.version),
                ),
                None => variant_from(
                    &mut |n| self.dict.lookup(n).expect("checked by contains_all"),
                    &mut promos,
                    entry,
                    Some(delta.version),
                ),
            };
            changes.push((
                hash,
                Change {
                    sku,
                    op: Op::Upsert(variant),
                },
            ));
        }
        let dict = grown
            .map(Arc::new)
            .unwrap_or_else(|| Arc::clone(&self.dict));
        for key in delta.removals {
            let hash = hasher.hash_one(key.sku.as_str());
            // A removal naming a dimension the table never had removes nothing.
            let ids = (
                dict.lookup(key.store.as_str()),
                dict.lookup(key.channel.as_str()),
                dict.lookup(key.segment.as_str()),
            );
            if let (Some(store), Some(channel), Some(segment)) = ids {
                changes.push((
                    hash,
                    Change {
                        sku: key.sku,
                        op: Op::Remove {
                            store,
                            channel,
                            segment,
                        },
                    },
                ));
            }
        }
        // Stable sort: for the same SKU, upserts keep delta order, then removals.
        changes.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.sku.cmp(&b.1.sku)));

        let mut shards = self.shards.clone();
        let mut entry_count = self.entry_count as isize;
        let mut sku_count = self.sku_count as isize;
        let mut start = 0;
        while start < changes.len() {
            let index = shard_index(changes[start].0, self.shard_shift);
            let end = start
                + changes[start..]
                    .iter()
                    .take_while(|(h, _)| shard_index(*h, self.shard_shift) == index)
                    .count();
            let (new_shard, d_entries, d_skus) =
                rebuild_shard(&self.shards[index], &changes[start..end]);
            shards[index] = Arc::new(new_shard);
            entry_count += d_entries;
            sku_count += d_skus;
            start = end;
        }
        debug_assert!(entry_count >= 0 && sku_count >= 0);
        Ok(Snapshot {
            version: delta.version,
            created_at_ms: delta.created_at_ms,
            dict,
            shards,
            shard_shift: self.shard_shift,
            entry_count: entry_count as usize,
            sku_count: sku_count as usize,
            promotions,
        })
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
        let shard = &self.shards[shard_index(hash, self.shard_shift)];
        shard.find(hash, sku).ok().map(|i| &*shard.skus[i])
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
        let iter = self
            .shards
            .iter()
            .flat_map(|shard| shard.skus.iter())
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

fn count_groups(rows: &[(u64, PriceEntry)]) -> usize {
    rows.iter()
        .enumerate()
        .filter(|(i, (h, e))| *i == 0 || rows[i - 1].0 != *h || rows[i - 1].1.key.sku != e.key.sku)
        .count()
}

/// Converts an entry, returning its SKU (moved out, not copied) and the variant.
fn variant_from(
    intern: &mut impl FnMut(&str) -> u32,
    promos: &mut PromoCache,
    e: PriceEntry,
    revision: Option<u64>,
) -> (Sku, Variant) {
    let promotion = e.promotion.map(|p| {
        if let Some(shared) = promos.get(&p) {
            return Arc::clone(shared);
        }
        let promo = Arc::new(Promo {
            id_json: json_escape(&p.id).into(),
            label_json: json_escape(&p.label).into(),
            starts_at_json: crate::render::rfc3339_json(p.starts_at_ms).into(),
            ends_at_json: crate::render::rfc3339_json(p.ends_at_ms).into(),
            id: p.id.as_str().into(),
            label: p.label.as_str().into(),
            price_minor: p.price_minor,
            starts_at_ms: p.starts_at_ms,
            ends_at_ms: p.ends_at_ms,
        });
        promos.insert(p, Arc::clone(&promo));
        promo
    });
    let variant = Variant {
        store: intern(e.key.store.as_str()),
        channel: intern(e.key.channel.as_str()),
        segment: intern(e.key.segment.as_str()),
        entry: Entry {
            currency: e.currency,
            list_price_minor: e.list_price_minor,
            price_minor: e.price_minor,
            floor_minor: e.floor_minor,
            valid_from_ms: e.valid_from_ms.unwrap_or(i64::MIN),
            valid_until_ms: e.valid_until_ms.unwrap_or(i64::MAX),
            revision: revision.unwrap_or(e.revision),
            promotion,
        },
    };
    (e.key.sku, variant)
}

/// Interns promotions while building: every variant of a SKU usually carries the same
/// promotion, so it is allocated once and shared.
type PromoCache = HashMap<PromotionTag, Arc<Promo>, RandomState>;

fn promo_cache() -> PromoCache {
    HashMap::with_hasher(hasher())
}

enum Op {
    Upsert(Variant),
    Remove {
        store: u32,
        channel: u32,
        segment: u32,
    },
}

struct Change {
    sku: Sku,
    op: Op,
}

/// Applies the changes for one shard (sorted by hash, SKU). Returns the new shard and
/// the change in entry and SKU counts.
fn rebuild_shard(old: &Shard, changes: &[(u64, Change)]) -> (Shard, isize, isize) {
    let mut skus: Vec<Arc<SkuPrices>> = old.skus.to_vec();
    let (mut d_entries, mut d_skus) = (0isize, 0isize);
    let mut start = 0;
    while start < changes.len() {
        let (hash, first) = &changes[start];
        let end = start
            + changes[start..]
                .iter()
                .take_while(|(h, c)| h == hash && c.sku == first.sku)
                .count();
        let sku = first.sku.as_str();
        let position = skus.binary_search_by(|s| s.hash.cmp(hash).then_with(|| (*s.sku).cmp(sku)));
        let mut variants: Vec<Variant> = match position {
            Ok(i) => skus[i].variants.to_vec(),
            Err(_) => Vec::new(),
        };
        let before = variants.len() as isize;
        for (_, change) in &changes[start..end] {
            match &change.op {
                Op::Upsert(variant) => match variants.iter_mut().find(|v| v.same_key(variant)) {
                    Some(existing) => *existing = variant.clone(),
                    None => variants.push(variant.clone()),
                },
                Op::Remove {
                    store,
                    channel,
                    segment,
                } => variants.retain(|v| {
                    !(v.store == *store && v.channel == *channel && v.segment == *segment)
                }),
            }
        }
        d_entries += variants.len() as isize - before;
        match (position, variants.is_empty()) {
            (Ok(i), true) => {
                skus.remove(i);
                d_skus -= 1;
            }
            (Ok(i), false) => skus[i] = Arc::new(SkuPrices::new(*hash, sku.into(), variants)),
            (Err(i), false) => {
                skus.insert(i, Arc::new(SkuPrices::new(*hash, sku.into(), variants)));
                d_skus += 1;
            }
            (Err(_), true) => {}
        }
        start = end;
    }
    (
        Shard {
            skus: skus.into_boxed_slice(),
        },
        d_entries,
        d_skus,
    )
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
            .filter(|(a, b)| Arc::ptr_eq(a, b))
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
}
