//! How numbers, money and times read on screen; and parsing what operators type.

use chrono::{DateTime, Utc};
use edgeprice_pricing::Currency;

/// Digits after the decimal point of a currency (2 when unknown).
pub fn exponent(currency: &str) -> u32 {
    Currency::parse(currency)
        .map(|c| u32::from(c.exponent()))
        .unwrap_or(2)
}

/// `1234` EUR → `12.34`.
pub fn minor(amount: i64, currency: &str) -> String {
    let exp = exponent(currency);
    if exp == 0 {
        return amount.to_string();
    }
    let scale = 10i64.pow(exp);
    let sign = if amount < 0 { "-" } else { "" };
    let abs = amount.unsigned_abs();
    format!(
        "{sign}{}.{:0width$}",
        abs / scale as u64,
        abs % scale as u64,
        width = exp as usize
    )
}

/// `123456` EUR → `1,234.56 EUR` (grouped for reading; [`minor`] stays plain for
/// editing).
pub fn money(amount: i64, currency: &str) -> String {
    let plain = minor(amount, currency);
    let (sign, digits) = match plain.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", plain.as_str()),
    };
    let (whole, fraction) = match digits.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (digits, None),
    };
    let grouped = thousands(whole.parse().unwrap_or(0));
    match fraction {
        Some(fraction) => format!("{sign}{grouped}.{fraction} {currency}"),
        None => format!("{sign}{grouped} {currency}"),
    }
}

/// Parses a price typed in major units (`12.5`, `12.50`, `12`) into minor units.
pub fn parse_price(text: &str, currency: &str) -> Result<i64, String> {
    let text = text.trim();
    let exp = exponent(currency) as usize;
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (text, ""),
    };
    let bad = || format!("{text:?} is not a price in {currency} (like 12.49)");
    if whole.is_empty() && fraction.is_empty()
        || !whole.chars().all(|c| c.is_ascii_digit())
        || !fraction.chars().all(|c| c.is_ascii_digit())
    {
        return Err(bad());
    }
    if fraction.len() > exp {
        return Err(format!("{currency} has {exp} decimals; {text:?} has more"));
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let fraction_value: i64 = if fraction.is_empty() {
        0
    } else {
        fraction.parse::<i64>().map_err(|_| bad())? * 10i64.pow((exp - fraction.len()) as u32)
    };
    let price = whole
        .checked_mul(10i64.pow(exp as u32))
        .and_then(|w| w.checked_add(fraction_value))
        .ok_or_else(bad)?;
    if price <= 0 {
        return Err("a price must be above zero".to_owned());
    }
    Ok(price)
}

/// Parses a duration like `90s`, `45m`, `2h`, `7d` (a bare number is minutes).
pub fn parse_duration_ms(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: i64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (like 30m, 2h, 1d)"))?;
    let unit_ms = match unit.trim() {
        "s" => 1_000,
        "" | "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => return Err(format!("unknown unit {other:?}: use s, m, h or d")),
    };
    if number <= 0 {
        return Err("a duration must be above zero".to_owned());
    }
    Ok(number * unit_ms)
}

/// Basis points as a percentage: `3125` → `31.2%`.
pub fn percent_bp(bp: i64) -> String {
    format!("{:.1}%", bp as f64 / 100.0)
}

/// A UTC wall-clock time: `HH:MM:SS`.
pub fn clock(at_ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(at_ms)
        .map(|t| t.format("%H:%M:%S").to_string())
        .unwrap_or_else(|| "—".to_owned())
}

/// A UTC date and time: `2026-11-23 17:05`.
pub fn date_time(at_ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(at_ms)
        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|| "—".to_owned())
}

/// A span in the largest sensible unit: `850ms`, `12s`, `4m`, `3h`, `2d`.
pub fn span(ms: i64) -> String {
    let abs = ms.unsigned_abs();
    let sign = if ms < 0 { "-" } else { "" };
    if abs < 1_000 {
        format!("{sign}{abs}ms")
    } else if abs < 60_000 {
        format!("{sign}{}s", abs / 1_000)
    } else if abs < 3_600_000 {
        format!("{sign}{}m", abs / 60_000)
    } else if abs < 86_400_000 {
        format!("{sign}{}h", abs / 3_600_000)
    } else {
        format!("{sign}{}d", abs / 86_400_000)
    }
}

/// How long ago `at_ms` was, seen at `now_ms`.
pub fn ago(at_ms: i64, now_ms: i64) -> String {
    if at_ms <= 0 {
        return "—".to_owned();
    }
    format!("{} ago", span(now_ms - at_ms))
}

/// Microseconds as `780µs` or `17.2ms`.
pub fn micros(us: u64) -> String {
    if us < 1_000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{:.1}ms", us as f64 / 1_000.0)
    } else {
        format!("{:.2}s", us as f64 / 1_000_000.0)
    }
}

/// A rate with thousands separators: `12,345/s`, or one decimal when small.
pub fn rate(per_s: f64) -> String {
    if per_s < 10.0 {
        format!("{per_s:.1}/s")
    } else {
        format!("{}/s", thousands(per_s.round() as u64))
    }
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_uses_the_currency_exponent() {
        assert_eq!(money(1234, "EUR"), "12.34 EUR");
        assert_eq!(money(-5, "EUR"), "-0.05 EUR");
        assert_eq!(money(1234, "JPY"), "1,234 JPY");
        assert_eq!(money(193_556_407, "EUR"), "1,935,564.07 EUR");
        assert_eq!(money(-123_456, "EUR"), "-1,234.56 EUR");
    }

    #[test]
    fn prices_parse_in_major_units_without_floats() {
        assert_eq!(parse_price("12.49", "EUR"), Ok(1249));
        assert_eq!(parse_price("12.5", "EUR"), Ok(1250));
        assert_eq!(parse_price("12", "EUR"), Ok(1200));
        assert_eq!(parse_price(".99", "EUR"), Ok(99));
        assert_eq!(parse_price("1500", "JPY"), Ok(1500));
        assert!(parse_price("12.499", "EUR")
            .unwrap_err()
            .contains("2 decimals"));
        assert!(parse_price("1.5", "JPY").is_err());
        assert!(parse_price("abc", "EUR").is_err());
        assert!(parse_price("-3", "EUR").is_err());
        assert!(parse_price("0", "EUR").is_err());
        assert!(parse_price("", "EUR").is_err());
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration_ms("90s"), Ok(90_000));
        assert_eq!(parse_duration_ms("45"), Ok(45 * 60_000));
        assert_eq!(parse_duration_ms("2h"), Ok(7_200_000));
        assert_eq!(parse_duration_ms("7d"), Ok(7 * 86_400_000));
        assert!(parse_duration_ms("2w").is_err());
        assert!(parse_duration_ms("0m").is_err());
        assert!(parse_duration_ms("soon").is_err());
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(999), "999");
        assert_eq!(rate(12345.4), "12,345/s");
        assert_eq!(rate(2.25), "2.2/s");
        assert_eq!(micros(780), "780µs");
        assert_eq!(micros(17_240), "17.2ms");
        assert_eq!(span(125_000), "2m");
        assert_eq!(percent_bp(3125), "31.2%");
        assert_eq!(clock(1_795_453_200_000), "17:00:00");
        assert_eq!(date_time(1_795_453_200_000), "2026-11-23 17:00");
    }
}
