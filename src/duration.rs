//! Durations as people write them in manifests and configs: `500ms`, `30s`, `1h30m`, `7d`.

use std::time::Duration;

/// Go-style durations (`1h30m`, `500ms`) plus `d` for days, as nanoseconds.
pub fn parse_nanos(text: &str) -> Result<i64, String> {
    let mut total: f64 = 0.0;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("`{text}` lacks a unit (ns, us, ms, s, m, h, d)"))?;
        let number: f64 = rest[..num_end]
            .parse()
            .map_err(|_| format!("`{text}` is not a duration"))?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "d" => 86400e9,
            other => return Err(format!("unknown duration unit `{other}` in `{text}`")),
        };
        total += number * scale;
        rest = &rest[unit_end..];
    }
    Ok(total.round() as i64)
}

/// A duration for config values (`interval = "60s"`).
pub fn parse(text: &str) -> Result<Duration, String> {
    let nanos = parse_nanos(text)?;
    u64::try_from(nanos)
        .map(Duration::from_nanos)
        .map_err(|_| format!("`{text}` is negative"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_style_durations() {
        const S: i64 = 1_000_000_000;
        assert_eq!(parse_nanos("1h30m").unwrap(), 5_400 * S);
        assert_eq!(parse_nanos("500ms").unwrap(), 500_000_000);
        assert_eq!(parse_nanos("7d").unwrap(), 7 * 86_400 * S);
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_nanos("10").is_err());
        assert!(parse_nanos("3w").is_err());
        assert!(parse_nanos("").is_err());
    }
}

/// `#[serde(with = "crate::duration::text")]` for config fields written as `"60s"`.
pub mod text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        super::parse(&s).map_err(serde::de::Error::custom)
    }

    pub fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", value.as_millis()))
    }
}
