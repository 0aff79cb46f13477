//! The `barrier[:limit]` syntax of vzctl's command line and CTID.conf: one value sets both,
//! `unlimited` is LONG_MAX, and size suffixes are accepted where the row's unit allows.

use super::{Resource, Unit, UNLIMITED};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("{resource}: empty value")]
    Empty { resource: Resource },
    #[error("{resource}: '{text}' is not a number, a size or 'unlimited'")]
    NotANumber { resource: Resource, text: String },
    #[error("{resource}: '{text}' has a size suffix, but {resource} counts items")]
    SuffixOnItems { resource: Resource, text: String },
    #[error("{resource}: '{text}' is too large")]
    Overflow { resource: Resource, text: String },
    #[error("{resource}: barrier {barrier} is above limit {limit}")]
    BarrierAboveLimit {
        resource: Resource,
        barrier: u64,
        limit: u64,
    },
}

/// Parses `B[:L]` for `resource`, returning (barrier, limit).
pub fn parse_barrier_limit(resource: Resource, text: &str) -> Result<(u64, u64), ParseError> {
    let text = text.trim();
    let (b, l) = match text.split_once(':') {
        Some((b, l)) => (b, l),
        None => (text, text),
    };
    let barrier = parse_one(resource, b)?;
    let limit = parse_one(resource, l)?;
    if barrier > limit {
        return Err(ParseError::BarrierAboveLimit {
            resource,
            barrier,
            limit,
        });
    }
    Ok((barrier, limit))
}

fn parse_one(resource: Resource, text: &str) -> Result<u64, ParseError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ParseError::Empty { resource });
    }
    if text.eq_ignore_ascii_case("unlimited") {
        return Ok(UNLIMITED);
    }
    let bad = || ParseError::NotANumber {
        resource,
        text: text.to_string(),
    };
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, suffix) = text.split_at(split);
    if digits.is_empty() {
        return Err(bad());
    }
    let number: u64 = digits.parse().map_err(|_| ParseError::Overflow {
        resource,
        text: text.to_string(),
    })?;
    let multiplier = match (resource.unit(), suffix.to_ascii_uppercase().as_str()) {
        (_, "") => 1,
        (Unit::Items, _) => {
            return Err(ParseError::SuffixOnItems {
                resource,
                text: text.to_string(),
            })
        }
        (unit, s) => size_multiplier(unit, s).ok_or_else(bad)?,
    };
    let value = number
        .checked_mul(multiplier)
        .filter(|v| *v <= UNLIMITED)
        .ok_or_else(|| ParseError::Overflow {
            resource,
            text: text.to_string(),
        })?;
    Ok(value)
}

/// vzctl's suffixes: K, M, G, T in bytes (converted to pages for page rows), P for pages
/// (page rows only), B for bytes.
fn size_multiplier(unit: Unit, suffix: &str) -> Option<u64> {
    const PAGE: u64 = 4096;
    let bytes = match suffix {
        "B" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        "P" if unit == Unit::Pages => return Some(1),
        _ => return None,
    };
    match unit {
        Unit::Bytes => Some(bytes),
        Unit::Pages if bytes >= PAGE => Some(bytes / PAGE),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_value_sets_barrier_and_limit() {
        assert_eq!(parse_barrier_limit(Resource::NumProc, "240"), Ok((240, 240)));
        assert_eq!(parse_barrier_limit(Resource::NumProc, "20:30"), Ok((20, 30)));
    }

    #[test]
    fn unlimited_is_long_max() {
        assert_eq!(
            parse_barrier_limit(Resource::NumFile, "unlimited"),
            Ok((UNLIMITED, UNLIMITED))
        );
        assert_eq!(
            parse_barrier_limit(Resource::NumFile, "10:unlimited"),
            Ok((10, UNLIMITED))
        );
    }

    #[test]
    fn suffixes_follow_the_unit() {
        assert_eq!(parse_barrier_limit(Resource::PrivVmPages, "5M:6M"), Ok((1280, 1536)));
        assert_eq!(parse_barrier_limit(Resource::PrivVmPages, "100P"), Ok((100, 100)));
        assert_eq!(parse_barrier_limit(Resource::KmemSize, "1K"), Ok((1024, 1024)));
        assert!(matches!(
            parse_barrier_limit(Resource::NumProc, "5M"),
            Err(ParseError::SuffixOnItems { .. })
        ));
        assert!(matches!(
            parse_barrier_limit(Resource::KmemSize, "5P"),
            Err(ParseError::NotANumber { .. })
        ));
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(matches!(
            parse_barrier_limit(Resource::NumProc, "-1"),
            Err(ParseError::NotANumber { .. })
        ));
        assert!(matches!(
            parse_barrier_limit(Resource::NumProc, ""),
            Err(ParseError::Empty { .. })
        ));
        assert!(matches!(
            parse_barrier_limit(Resource::NumProc, "30:20"),
            Err(ParseError::BarrierAboveLimit { .. })
        ));
        assert!(matches!(
            parse_barrier_limit(Resource::NumProc, "99999999999999999999"),
            Err(ParseError::Overflow { .. })
        ));
        assert!(matches!(
            parse_barrier_limit(Resource::KmemSize, "9000000000000T"),
            Err(ParseError::Overflow { .. })
        ));
    }
}
