//! Human units for sizes (`256MiB`, `1GB`, `4096`) and durations (`30s`,
//! `500ms`, `2m`, `1h`), with serde support so manifests can use them.

use std::{fmt, str::FromStr, time::Duration};

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// A size in bytes, written in human units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The number of bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl ByteSize {
    /// Parse a size that says its unit: `64MiB`, `1.5GiB`, `64B`. A bare
    /// number is refused, since `64` could mean bytes or mebibytes; this is
    /// what flags and manifest strings use.
    ///
    /// Errors: the message says what to write instead.
    pub fn parse_with_unit(s: &str) -> Result<Self, String> {
        let t = s.trim().replace('_', "");
        if t.starts_with('-') {
            return Err(format!("a size cannot be negative (`{s}`); write e.g. `64MiB`"));
        }
        if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return Err(format!("`{s}` has no unit; write `{t}MiB`, `{t}KiB`, or `{t}B` for bytes"));
        }
        s.parse()
    }
}

impl FromStr for ByteSize {
    type Err = String;
    /// A size with a unit, fractions allowed (`1.5MiB`), or a bare byte
    /// count (see [`ByteSize::parse_with_unit`] for the stricter form).
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim().replace('_', "");
        let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let not_a_size = || format!("`{s}` is not a size; write e.g. `256MiB`, `1.5GiB`, `64KiB` or `4096B`");
        if num.is_empty() || num.matches('.').count() > 1 || num.starts_with('.') || num.ends_with('.') {
            return Err(not_a_size());
        }
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            "t" | "tb" => 1_000_000_000_000,
            "tib" => 1 << 40,
            other => return Err(format!("unknown size unit `{other}` in `{s}`; use B, KiB, MiB, GiB, KB, MB or GB")),
        };
        let too_large = || format!("size `{s}` is too large");
        match num.split_once('.') {
            None => {
                let n: u64 = num.parse().map_err(|_| too_large())?;
                n.checked_mul(mult).map(ByteSize).ok_or_else(too_large)
            }
            Some((whole, frac)) => {
                // Exact: whole·mult + frac·mult / 10^digits, in integers.
                let digits = u32::try_from(frac.len()).map_err(|_| not_a_size())?;
                let scale = 10u128.checked_pow(digits).ok_or_else(not_a_size)?;
                let whole: u128 = whole.parse().map_err(|_| too_large())?;
                let frac: u128 = frac.parse().map_err(|_| not_a_size())?;
                let m = u128::from(mult);
                let part = frac.checked_mul(m).ok_or_else(too_large)?;
                if part % scale != 0 {
                    return Err(format!("`{s}` is not a whole number of bytes; give more of a unit or fewer decimals"));
                }
                let total = whole.checked_mul(m).and_then(|w| w.checked_add(part / scale)).ok_or_else(too_large)?;
                u64::try_from(total).map(ByteSize).map_err(|_| too_large())
            }
        }
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        for (unit, m) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if b >= m && b % m == 0 {
                return write!(f, "{}{unit}", b / m);
            }
        }
        write!(f, "{b}B")
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as \"256MiB\" or a byte count")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v).map(ByteSize).map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                // A string says its unit; a byte count is a TOML integer.
                ByteSize::parse_with_unit(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// An amount of US dollars, kept as whole nano-dollars (10⁻⁹ USD) so that
/// budgets compare and add exactly; written in TOML as a number of dollars
/// (`usd = 0.50`, `usd = 5`) and serialized the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Usd(pub u64);

impl Usd {
    /// Nano-dollars in one dollar.
    pub const NANOS_PER_DOLLAR: u64 = 1_000_000_000;

    /// `dollars`, rounded up to the next nano-dollar (a cost is never
    /// rounded down to nothing). Errors when negative or not finite.
    pub fn from_dollars(dollars: f64) -> Result<Self, String> {
        if !dollars.is_finite() || dollars < 0.0 {
            return Err(format!("{dollars} is not an amount of dollars; write a number of 0 or more, e.g. 0.50"));
        }
        let nanos = (dollars * Self::NANOS_PER_DOLLAR as f64).round();
        if nanos >= u64::MAX as f64 {
            return Err(format!("{dollars} dollars is too large"));
        }
        Ok(Self(nanos as u64))
    }

    /// Whether it is nothing (serde's `skip_serializing_if`).
    pub fn is_zero(&self) -> bool {
        self.0 == 0
    }

    /// The amount in dollars.
    pub fn dollars(self) -> f64 {
        self.0 as f64 / Self::NANOS_PER_DOLLAR as f64
    }
}

impl fmt::Display for Usd {
    /// `$0.50`, `$12.00`; amounts below a cent keep their digits
    /// (`$0.000123`), since a few requests to a cheap model cost that.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, frac) = (self.0 / Self::NANOS_PER_DOLLAR, self.0 % Self::NANOS_PER_DOLLAR);
        let mut digits = format!("{frac:09}");
        while digits.len() > 2 && digits.ends_with('0') {
            digits.pop();
        }
        write!(f, "${whole}.{digits}")
    }
}

impl Serialize for Usd {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.dollars())
    }
}

impl<'de> Deserialize<'de> for Usd {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Usd;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an amount of dollars such as 0.50")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Usd, E> {
                Usd::from_dollars(v as f64).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Usd, E> {
                Usd::from_dollars(v as f64).map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Usd, E> {
                Usd::from_dollars(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration written in human units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim().replace('_', "");
        let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: f64 =
            num.parse().map_err(|_| format!("`{s}` is not a duration; write e.g. `30s`, `500ms`, `2m` or `1h`"))?;
        let secs = match unit.trim().to_ascii_lowercase().as_str() {
            "ms" => n / 1000.0,
            "s" | "" => n,
            "m" | "min" => n * 60.0,
            "h" => n * 3600.0,
            other => return Err(format!("unknown duration unit `{other}` in `{s}`; use ms, s, m or h")),
        };
        if !secs.is_finite() || secs < 0.0 || secs > 1e9 {
            return Err(format!("duration `{s}` is out of range"));
        }
        Ok(HumanDuration(Duration::from_secs_f64(secs)))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms % 1000 == 0 {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!("256MiB".parse::<ByteSize>().unwrap().0, 256 << 20);
        assert_eq!("1_000".parse::<ByteSize>().unwrap().0, 1000);
        assert_eq!("2 GiB".parse::<ByteSize>().unwrap().0, 2 << 30);
        assert!("12 parsecs".parse::<ByteSize>().unwrap_err().contains("unknown size unit"));
        assert_eq!(ByteSize(256 << 20).to_string(), "256MiB");
    }

    #[test]
    fn fractional_sizes_are_read_exactly() {
        assert_eq!("1.5MiB".parse::<ByteSize>().unwrap().0, 3 << 19);
        assert_eq!("0.5KiB".parse::<ByteSize>().unwrap().0, 512);
        assert_eq!(ByteSize::parse_with_unit("1.5 GiB").unwrap().0, 3 << 29);
        assert!("1.5B".parse::<ByteSize>().unwrap_err().contains("whole number of bytes"));
        assert!("1.2.3MiB".parse::<ByteSize>().is_err());
        assert!(".5MiB".parse::<ByteSize>().is_err());
    }

    #[test]
    fn a_size_flag_needs_a_unit_and_cannot_be_negative() {
        let e = ByteSize::parse_with_unit("64").unwrap_err();
        assert!(e.contains("no unit") && e.contains("64MiB") && e.contains("64B"), "{e}");
        assert_eq!(ByteSize::parse_with_unit("64B").unwrap().0, 64);
        assert!(ByteSize::parse_with_unit("-1").unwrap_err().contains("negative"));
        let e: Result<ByteSize, _> = toml::from_str::<toml::Value>("m = \"64\"").unwrap()["m"].clone().try_into();
        assert!(e.unwrap_err().to_string().contains("no unit"));
    }

    #[test]
    fn durations() {
        assert_eq!("30s".parse::<HumanDuration>().unwrap().0, Duration::from_secs(30));
        assert_eq!("500ms".parse::<HumanDuration>().unwrap().0, Duration::from_millis(500));
        assert_eq!("1.5m".parse::<HumanDuration>().unwrap().0, Duration::from_secs(90));
        assert!("soon".parse::<HumanDuration>().is_err());
    }

    #[test]
    fn dollars_parse_print_and_refuse_negatives() {
        #[derive(Deserialize)]
        struct T {
            usd: Usd,
        }
        let t: T = toml::from_str("usd = 0.5").unwrap();
        assert_eq!(t.usd, Usd(500_000_000));
        assert_eq!(t.usd.to_string(), "$0.50");
        let t: T = toml::from_str("usd = 5").unwrap();
        assert_eq!(t.usd.to_string(), "$5.00");
        assert_eq!(Usd(123_000).to_string(), "$0.000123");
        assert_eq!(Usd(1).to_string(), "$0.000000001");
        assert!(toml::from_str::<T>("usd = -1").is_err());
        assert!(toml::from_str::<T>("usd = nan").is_err());
        assert!(toml::from_str::<T>("usd = \"5\"").is_err());
        assert_eq!(serde_json::to_string(&Usd(250_000_000)).unwrap(), "0.25");
    }
}
