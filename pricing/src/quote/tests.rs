//! Quote encoding, signing, verification and key rotation.

use proptest::prelude::*;

use super::*;
use crate::promo::{synthetic, CouponInput};

const NOW: i64 = synthetic::NOW_MS;
const SECRET_1: &[u8] = b"0123456789abcdef0123456789abcdef";
const SECRET_2: &[u8] = b"fedcba9876543210fedcba9876543210";

fn context() -> CartContext {
    let mut ctx = CartContext::new(Currency::EUR, NOW, chrono_tz::Europe::Paris);
    ctx.store = Dimension::new("store-7").unwrap();
    ctx.channel = Dimension::new("app").unwrap();
    ctx.segment = Dimension::new("gold").unwrap();
    ctx.customer_id = Some("cust-42".into());
    ctx.shipping_fee_minor = 499;
    ctx.coupons = vec![CouponInput::new("code9")];
    ctx
}

fn issued() -> IssuedQuote {
    let set = synthetic::promotion_set(2_000, 500);
    let cart = synthetic::cart(12, 500);
    let keyring = Keyring::new("k1", SECRET_1).unwrap();
    issue(&set, &cart, &context(), 77, DEFAULT_TTL_MS, &keyring).unwrap()
}

fn keyring() -> Keyring {
    Keyring::new("k1", SECRET_1).unwrap()
}

#[test]
fn quote_carries_the_evaluation_and_the_default_fifteen_minutes() {
    let issued = issued();
    let quote = &issued.quote;
    assert_eq!(quote.snapshot_version, 77);
    assert_eq!(quote.issued_at_ms, NOW);
    assert_eq!(quote.expires_at_ms, NOW + 15 * 60 * 1_000);
    assert_eq!(quote.totals, issued.evaluation.totals);
    assert_eq!(quote.lines.len(), 12);
    assert_eq!(quote.coupons.len(), 1, "CODE9 unlocks a cart promotion");
    assert_eq!(quote.coupons[0].code, "CODE9");
    let discounts: i64 = quote
        .lines
        .iter()
        .flat_map(|l| &l.discounts)
        .map(|d| d.amount_minor)
        .sum();
    assert_eq!(discounts, quote.totals.discount_minor);
}

#[test]
fn bad_lifetimes_are_refused() {
    let issued = issued();
    for ttl in [0, -1, MAX_TTL_MS + 1] {
        assert_eq!(
            Quote::new(&issued.evaluation, &context(), 1, ttl),
            Err(QuoteError::Ttl(ttl))
        );
    }
}

#[test]
fn encoding_round_trips_and_follows_the_documented_layout() {
    let quote = issued().quote;
    let bytes = encode(&quote);
    assert_eq!(decode(&bytes).unwrap(), quote);

    // A small quote, encoded by hand from the module docs.
    let small = Quote {
        snapshot_version: 3,
        promotions_version: 4,
        policy_version: 5,
        currency: Currency::EUR,
        store: Dimension::new("s1").unwrap(),
        channel: Dimension::any(),
        segment: Dimension::any(),
        customer_id: None,
        issued_at_ms: 10,
        expires_at_ms: 20,
        lines: vec![QuoteLine {
            sku: Sku::new("A").unwrap(),
            quantity: 2,
            unit_list_price_minor: 600,
            unit_price_minor: 500,
            discounts: vec![QuoteDiscount {
                promotion_id: "P".into(),
                amount_minor: 100,
            }],
            total_minor: 900,
        }],
        totals: Totals {
            list_minor: 1_200,
            subtotal_minor: 1_000,
            item_discount_minor: 100,
            discount_minor: 100,
            merchandise_minor: 900,
            total_minor: 900,
            ..Totals::default()
        },
        shipping_promotion_id: None,
        coupons: vec![],
    };
    let mut expected: Vec<u8> = b"EPQ\x01".to_vec();
    expected.extend(3u64.to_be_bytes());
    expected.extend(4u64.to_be_bytes());
    expected.extend(5u32.to_be_bytes());
    expected.extend(b"EUR");
    for s in ["s1", "*", "*"] {
        expected.extend((s.len() as u32).to_be_bytes());
        expected.extend(s.as_bytes());
    }
    expected.push(0);
    expected.extend(10i64.to_be_bytes());
    expected.extend(20i64.to_be_bytes());
    expected.extend(1u32.to_be_bytes());
    expected.extend(1u32.to_be_bytes());
    expected.extend(b"A");
    expected.extend(2u32.to_be_bytes());
    for v in [600i64, 500, 900] {
        expected.extend(v.to_be_bytes());
    }
    expected.extend(1u32.to_be_bytes());
    expected.extend(1u32.to_be_bytes());
    expected.extend(b"P");
    expected.extend(100i64.to_be_bytes());
    for v in [1_200i64, 1_000, 100, 0, 100, 900, 0, 0, 0, 900] {
        expected.extend(v.to_be_bytes());
    }
    expected.push(0);
    expected.extend(0u32.to_be_bytes());
    assert_eq!(encode(&small), expected);
}

#[test]
fn decoding_is_strict() {
    let bytes = encode(&issued().quote);
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert_eq!(decode(&trailing), Err(DecodeError::Trailing(1)));
    assert_eq!(
        decode(&bytes[..bytes.len() - 1]),
        Err(DecodeError::Truncated)
    );
    let mut version = bytes.clone();
    version[3] = 2;
    assert_eq!(decode(&version), Err(DecodeError::Version(2)));
    assert_eq!(decode(b"XYZ\x01"), Err(DecodeError::Magic));
}

#[test]
fn a_signed_quote_verifies_until_it_expires() {
    let issued = issued();
    let keyring = keyring();
    assert_eq!(keyring.verify(&issued.token, NOW).unwrap(), issued.quote);
    let expires = issued.quote.expires_at_ms;
    assert!(keyring.verify(&issued.token, expires - 1).is_ok());
    let expired = keyring.verify(&issued.token, expires).unwrap_err();
    assert_eq!(
        expired,
        TokenError::Expired {
            expired_at_ms: expires,
            now_ms: expires
        }
    );
    assert_eq!(expired.code(), "quote_expired");
}

#[test]
fn tampering_is_detected() {
    let token = issued().token;
    let keyring = keyring();
    let (payload, rest) = token.split_once('.').unwrap();

    // Change one payload character (a price, a total, anything).
    let mut altered: Vec<char> = payload.chars().collect();
    let middle = altered.len() / 2;
    altered[middle] = if altered[middle] == 'A' { 'B' } else { 'A' };
    let altered: String = altered.into_iter().collect();
    let err = keyring
        .verify(&format!("{altered}.{rest}"), NOW)
        .unwrap_err();
    assert_eq!(err, TokenError::BadSignature);
    assert_eq!(err.code(), "quote_tampered");

    // A re-encoded payload with a lower total and the old MAC.
    let mut cheaper = issued().quote;
    cheaper.totals.total_minor -= 1_000;
    let forged = format!(
        "{}.{rest}",
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            encode(&cheaper)
        )
    );
    assert_eq!(keyring.verify(&forged, NOW), Err(TokenError::BadSignature));

    // A MAC made with another secret under the same key id.
    let impostor = Keyring::new("k1", SECRET_2).unwrap().sign(&cheaper);
    assert_eq!(
        keyring.verify(&impostor, NOW),
        Err(TokenError::BadSignature)
    );

    // Changing the key id to another known key does not help either.
    let mut both = self::keyring();
    both.add("k2", SECRET_2).unwrap();
    let swapped = token.replacen(".k1.", ".k2.", 1);
    assert_eq!(both.verify(&swapped, NOW), Err(TokenError::BadSignature));
}

#[test]
fn unknown_keys_and_malformed_tokens_have_their_own_errors() {
    let keyring = keyring();
    let other = Keyring::new("k9", SECRET_1).unwrap().sign(&issued().quote);
    let err = keyring.verify(&other, NOW).unwrap_err();
    assert_eq!(err, TokenError::UnknownKey("k9".into()));
    assert_eq!(err.code(), "quote_unknown_key");
    for token in ["", "abc", "a.b", "a.k1.b.c", "a.k1.!!!"] {
        let err = keyring.verify(token, NOW).unwrap_err();
        assert!(matches!(err, TokenError::Malformed(_)), "{token}: {err:?}");
        assert_eq!(err.code(), "quote_malformed");
    }
}

#[test]
fn keys_rotate_by_id() {
    let quote = issued().quote;
    let mut keyring = keyring();
    let old_token = keyring.sign(&quote);
    keyring.add("k2", SECRET_2).unwrap();
    keyring.activate("k2").unwrap();
    let new_token = keyring.sign(&quote);
    assert!(new_token.contains(".k2."));
    assert!(
        keyring.verify(&old_token, NOW).is_ok(),
        "old key still verifies"
    );
    assert!(keyring.verify(&new_token, NOW).is_ok());
    assert_eq!(
        keyring.remove("k2"),
        Err(KeyringError::RemoveActive("k2".into()))
    );
    keyring.remove("k1").unwrap();
    assert_eq!(
        keyring.verify(&old_token, NOW),
        Err(TokenError::UnknownKey("k1".into()))
    );
    assert_eq!(keyring.key_ids().collect::<Vec<_>>(), vec!["k2"]);
}

#[test]
fn keyring_refuses_weak_or_ambiguous_keys() {
    assert!(matches!(
        Keyring::new("k1", b"short"),
        Err(KeyringError::ShortSecret { len: 5, .. })
    ));
    assert!(matches!(
        Keyring::new("k.1", SECRET_1),
        Err(KeyringError::BadKeyId(_))
    ));
    let mut keyring = keyring();
    assert_eq!(
        keyring.add("k1", SECRET_2),
        Err(KeyringError::DuplicateKey("k1".into()))
    );
    assert_eq!(
        keyring.activate("nope"),
        Err(KeyringError::UnknownKey("nope".into()))
    );
    assert!(!format!("{keyring:?}").contains("0123456789abcdef"));
}

proptest! {
    // Each case prices three carts against 1,000 promotions: fewer cases keep debug
    // test runs short on the shared machine.
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn same_cart_in_any_order_gives_the_same_token(
        picks in proptest::sample::subsequence((0..40).collect::<Vec<usize>>(), 1..20),
        seed in any::<u64>(),
    ) {
        static SET: std::sync::OnceLock<PromotionSet> = std::sync::OnceLock::new();
        let set = SET.get_or_init(|| synthetic::promotion_set(1_000, 200));
        let all = synthetic::cart(40, 200);
        let cart: Vec<_> = picks.iter().map(|i| all[*i].clone()).collect();
        // A deterministic shuffle driven by the seed.
        let mut shuffled = cart.clone();
        let mut state = seed | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            shuffled.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let keyring = keyring();
        let a = issue(set, &cart, &context(), 5, DEFAULT_TTL_MS, &keyring).unwrap();
        let b = issue(set, &shuffled, &context(), 5, DEFAULT_TTL_MS, &keyring).unwrap();
        let c = issue(set, &cart, &context(), 5, DEFAULT_TTL_MS, &keyring).unwrap();
        prop_assert_eq!(&a.token, &b.token);
        prop_assert_eq!(&a.token, &c.token);
        prop_assert_eq!(encode(&a.quote), encode(&b.quote));
        prop_assert_eq!(keyring.verify(&a.token, NOW).unwrap(), a.quote);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes);
        let mut prefixed = b"EPQ\x01".to_vec();
        prefixed.extend(bytes);
        let _ = decode(&prefixed);
    }
}
