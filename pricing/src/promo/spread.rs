//! Spreading an amount over lines by largest remainder, the project's one way to split
//! a cart discount: every line gets `floor(amount × weight / total)`, and the minor units
//! left over go one each to the lines with the largest remainders, ties to the lower
//! index (lines are in canonical SKU order, so the tie-break is deterministic).

/// Splits `amount` over `weights` in proportion, by largest remainder. The shares add
/// up to `amount` exactly when the weights sum to more than zero; otherwise every share
/// is zero. Negative weights count as zero.
pub fn largest_remainder(amount: i64, weights: &[i64]) -> Vec<i64> {
    let total: i128 = weights.iter().map(|w| (*w).max(0) as i128).sum();
    if total == 0 || amount <= 0 {
        return vec![0; weights.len()];
    }
    let amount = amount as i128;
    let mut shares = Vec::with_capacity(weights.len());
    let mut remainders = Vec::with_capacity(weights.len());
    let mut given: i128 = 0;
    for (index, weight) in weights.iter().enumerate() {
        let product = amount * (*weight).max(0) as i128;
        let share = product / total;
        given += share;
        // Shares never exceed `amount`, which is an i64.
        shares.push(share as i64);
        remainders.push((product % total, index));
    }
    let leftover = (amount - given) as usize;
    // Largest remainder first, then lowest index.
    remainders.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, index) in remainders.into_iter().take(leftover) {
        shares[index] += 1;
    }
    shares
}

/// Spreads `amount` by largest remainder over `weights`, no line receiving more than its
/// `cap`. What a capped line cannot take is spread again over the others (in proportion
/// to their weights) until everything is placed or no line has room. Returns the shares;
/// their sum is below `amount` only when the caps together are.
pub fn spread_capped(amount: i64, weights: &[i64], caps: &[i64]) -> Vec<i64> {
    debug_assert_eq!(weights.len(), caps.len());
    let mut granted = vec![0i64; weights.len()];
    let mut active: Vec<bool> = weights
        .iter()
        .zip(caps)
        .map(|(w, c)| *w > 0 && *c > 0)
        .collect();
    let mut remaining = amount.max(0);
    while remaining > 0 && active.iter().any(|a| *a) {
        let round_weights: Vec<i64> = weights
            .iter()
            .zip(&active)
            .map(|(w, a)| if *a { *w } else { 0 })
            .collect();
        let shares = largest_remainder(remaining, &round_weights);
        let mut any_capped = false;
        for index in 0..weights.len() {
            if !active[index] {
                continue;
            }
            let room = caps[index] - granted[index];
            let give = shares[index].min(room);
            granted[index] += give;
            remaining -= give;
            if shares[index] >= room {
                active[index] = false;
                any_capped |= shares[index] > room;
            }
        }
        if !any_capped {
            break;
        }
    }
    granted
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn leftover_goes_to_largest_remainders_then_lowest_index() {
        assert_eq!(largest_remainder(100, &[1, 1, 1]), vec![34, 33, 33]);
        assert_eq!(largest_remainder(2, &[1, 1, 1]), vec![1, 1, 0]);
        // 10 × 2/7 = 2.857, 10 × 5/7 = 7.142: the .857 gets the unit.
        assert_eq!(largest_remainder(10, &[2, 5]), vec![3, 7]);
        assert_eq!(largest_remainder(10, &[0, 0]), vec![0, 0]);
        assert_eq!(largest_remainder(0, &[3, 4]), vec![0, 0]);
    }

    #[test]
    fn capped_lines_pass_the_rest_on() {
        // Equal weights, the first line can take only 1.
        assert_eq!(
            spread_capped(9, &[10, 10, 10], &[1, 100, 100]),
            vec![1, 4, 4]
        );
        // Not enough room in total.
        assert_eq!(spread_capped(50, &[10, 10], &[5, 7]), vec![5, 7]);
        // A line with no weight takes nothing.
        assert_eq!(spread_capped(6, &[0, 10], &[100, 100]), vec![0, 6]);
    }

    proptest! {
        #[test]
        fn shares_add_up_exactly(amount in 0i64..10_000_000, weights in proptest::collection::vec(0i64..1_000_000, 1..40)) {
            let shares = largest_remainder(amount, &weights);
            if weights.iter().any(|w| *w > 0) {
                prop_assert_eq!(shares.iter().sum::<i64>(), amount);
            }
            let total: i64 = weights.iter().sum();
            for (share, weight) in shares.iter().zip(&weights) {
                // Within one minor unit of the exact proportional share.
                if total > 0 {
                    let exact = amount as i128 * *weight as i128;
                    prop_assert!((*share as i128 * total as i128 - exact).abs() < total as i128);
                }
                prop_assert!(*share >= 0);
            }
        }

        #[test]
        fn capped_spread_respects_caps_and_places_what_fits(
            amount in 0i64..1_000_000,
            lines in proptest::collection::vec((0i64..100_000, 0i64..100_000), 1..30),
        ) {
            let weights: Vec<i64> = lines.iter().map(|l| l.0).collect();
            let caps: Vec<i64> = lines.iter().map(|l| l.1).collect();
            let granted = spread_capped(amount, &weights, &caps);
            let room: i64 = lines.iter().filter(|l| l.0 > 0).map(|l| l.1).sum();
            prop_assert_eq!(granted.iter().sum::<i64>(), amount.min(room));
            for ((g, c), w) in granted.iter().zip(&caps).zip(&weights) {
                prop_assert!(*g >= 0 && g <= c);
                if *w == 0 { prop_assert_eq!(*g, 0); }
            }
        }
    }
}
