//! Parsing of command arguments that does not need a server: integers, the
//! option list of TCACHE.SET, and the limits an entry must respect.

/// An argument problem, mapped to a Redis error reply by `crate::errors`.
#[derive(Debug, PartialEq, Eq)]
pub enum ArgError {
    NotAnInteger,
    Syntax,
    EmptyTags,
    TooManyTags { max: i64 },
    TagTooLong { max: i64 },
    ValueTooLarge { max: i64 },
}

pub const TTL_MIN: i64 = 1;
pub const TTL_MAX: i64 = 315_360_000;

/// A decimal integer as Redis parses one: optional '-', digits, no spaces or '+',
/// no leading zeros.
pub fn parse_i64(b: &[u8]) -> Result<i64, ArgError> {
    let s = std::str::from_utf8(b).map_err(|_| ArgError::NotAnInteger)?;
    let digits = s.strip_prefix('-').unwrap_or(s);
    let canonical = !digits.is_empty()
        && digits.bytes().all(|c| c.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && s != "-0";
    if !canonical {
        return Err(ArgError::NotAnInteger);
    }
    s.parse::<i64>().map_err(|_| ArgError::NotAnInteger)
}

pub fn parse_in_range(b: &[u8], min: i64, max: i64) -> Result<i64, ArgError> {
    let v = parse_i64(b)?;
    if v < min || v > max {
        return Err(ArgError::NotAnInteger);
    }
    Ok(v)
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Condition {
    #[default]
    Always,
    /// Only when the key does not exist.
    Nx,
    /// Only when the key already exists.
    Xx,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct SetOptions<'a> {
    pub condition: Condition,
    /// `GATE name`: the value must pass this quality gate.
    pub gate: Option<&'a [u8]>,
    /// `LEASE token`: store only if the lease still holds.
    pub lease: Option<&'a [u8]>,
    /// `SWR seconds`: servable as stale for this long after the ttl.
    pub swr: Option<i64>,
    pub tags: Vec<&'a [u8]>,
}

/// The options after `key value ttl`: `[NX | XX] [GATE name] [LEASE token]
/// [SWR seconds] [TAGS tag [tag ...]]`, keywords case-insensitive, TAGS last.
pub fn parse_set_options<'a>(args: &[&'a [u8]]) -> Result<SetOptions<'a>, ArgError> {
    let mut opts = SetOptions::default();
    let mut i = 0;
    while i < args.len() {
        let word = args[i];
        if word.eq_ignore_ascii_case(b"NX") || word.eq_ignore_ascii_case(b"XX") {
            if opts.condition != Condition::Always {
                return Err(ArgError::Syntax);
            }
            opts.condition = if word.eq_ignore_ascii_case(b"NX") {
                Condition::Nx
            } else {
                Condition::Xx
            };
        } else if word.eq_ignore_ascii_case(b"GATE") {
            let name = args.get(i + 1).ok_or(ArgError::Syntax)?;
            if opts.gate.replace(name).is_some() {
                return Err(ArgError::Syntax);
            }
            i += 1;
        } else if word.eq_ignore_ascii_case(b"LEASE") {
            let token = args.get(i + 1).ok_or(ArgError::Syntax)?;
            if opts.lease.replace(token).is_some() {
                return Err(ArgError::Syntax);
            }
            i += 1;
        } else if word.eq_ignore_ascii_case(b"SWR") {
            let secs = args.get(i + 1).ok_or(ArgError::Syntax)?;
            let secs = parse_in_range(secs, 1, TTL_MAX)?;
            if opts.swr.replace(secs).is_some() {
                return Err(ArgError::Syntax);
            }
            i += 1;
        } else if word.eq_ignore_ascii_case(b"TAGS") {
            let tags = &args[i + 1..];
            if tags.is_empty() {
                return Err(ArgError::EmptyTags);
            }
            opts.tags = tags.to_vec();
            return Ok(opts);
        } else {
            return Err(ArgError::Syntax);
        }
        i += 1;
    }
    Ok(opts)
}

/// The configured limits, read once per command.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_tags: i64,
    pub max_tag_bytes: i64,
    pub max_value_bytes: i64,
}

/// Checks value size and tags (after folding duplicates, counted by `distinct`).
pub fn check_limits(
    limits: &Limits,
    value_len: usize,
    tags: &[&[u8]],
    distinct: usize,
) -> Result<(), ArgError> {
    if value_len as u64 > limits.max_value_bytes as u64 {
        return Err(ArgError::ValueTooLarge {
            max: limits.max_value_bytes,
        });
    }
    if distinct as u64 > limits.max_tags as u64 {
        return Err(ArgError::TooManyTags {
            max: limits.max_tags,
        });
    }
    if tags
        .iter()
        .any(|t| t.len() as u64 > limits.max_tag_bytes as u64)
    {
        return Err(ArgError::TagTooLong {
            max: limits.max_tag_bytes,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(args: &[&'static str]) -> Result<SetOptions<'static>, ArgError> {
        let v: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
        parse_set_options(&v)
    }

    #[test]
    fn integers_parse_like_redis() {
        assert_eq!(parse_i64(b"10"), Ok(10));
        assert_eq!(parse_i64(b"-5"), Ok(-5));
        assert_eq!(parse_i64(b"0"), Ok(0));
        for bad in [
            &b""[..],
            b"-",
            b"+1",
            b" 1",
            b"1 ",
            b"01",
            b"-0",
            b"1.5",
            b"abc",
            b"\xff",
        ] {
            assert_eq!(parse_i64(bad), Err(ArgError::NotAnInteger), "{bad:?}");
        }
        assert_eq!(
            parse_i64(b"99999999999999999999"),
            Err(ArgError::NotAnInteger)
        );
        assert_eq!(
            parse_in_range(b"0", TTL_MIN, TTL_MAX),
            Err(ArgError::NotAnInteger)
        );
        assert_eq!(
            parse_in_range(b"315360001", TTL_MIN, TTL_MAX),
            Err(ArgError::NotAnInteger)
        );
        assert_eq!(parse_in_range(b"315360000", TTL_MIN, TTL_MAX), Ok(TTL_MAX));
    }

    #[test]
    fn set_options_any_case_tags_last() {
        let o = opts(&["nx", "TaGs", "a", "nx"]).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(o.condition, Condition::Nx);
        assert_eq!(
            o.tags,
            vec![&b"a"[..], b"nx"],
            "after TAGS every word is a tag"
        );
        assert_eq!(
            opts(&[]).unwrap_or_else(|e| panic!("{e:?}")),
            SetOptions::default()
        );
        assert_eq!(
            opts(&["XX"]).unwrap_or_else(|e| panic!("{e:?}")).condition,
            Condition::Xx
        );
        let o = opts(&["gate", "report", "XX", "TAGS", "t"]).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(o.gate, Some(&b"report"[..]));
        assert_eq!(o.condition, Condition::Xx);
    }

    #[test]
    fn set_options_refuse_repeats_conflicts_unknowns() {
        assert_eq!(opts(&["NX", "NX"]), Err(ArgError::Syntax));
        assert_eq!(opts(&["NX", "XX"]), Err(ArgError::Syntax));
        assert_eq!(opts(&["GATE"]), Err(ArgError::Syntax));
        assert_eq!(opts(&["GATE", "a", "GATE", "b"]), Err(ArgError::Syntax));
        assert_eq!(opts(&["LEASE"]), Err(ArgError::Syntax));
        assert_eq!(opts(&["LEASE", "a", "lease", "b"]), Err(ArgError::Syntax));
        assert_eq!(opts(&["SWR", "0"]), Err(ArgError::NotAnInteger));
        assert_eq!(opts(&["SWR", "x"]), Err(ArgError::NotAnInteger));
        assert_eq!(opts(&["SWR", "1", "SWR", "1"]), Err(ArgError::Syntax));
        let o = opts(&["swr", "30", "LEASE", "tok"]).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!((o.swr, o.lease), (Some(30), Some(&b"tok"[..])));
        assert_eq!(opts(&["TAGS"]), Err(ArgError::EmptyTags));
    }

    #[test]
    fn limits_are_enforced() {
        let l = Limits {
            max_tags: 2,
            max_tag_bytes: 3,
            max_value_bytes: 4,
        };
        assert_eq!(check_limits(&l, 4, &[b"abc", b"abc", b"x"], 2), Ok(()));
        assert_eq!(
            check_limits(&l, 5, &[], 0),
            Err(ArgError::ValueTooLarge { max: 4 })
        );
        assert_eq!(
            check_limits(&l, 1, &[b"a", b"b", b"c"], 3),
            Err(ArgError::TooManyTags { max: 2 })
        );
        assert_eq!(
            check_limits(&l, 1, &[b"abcd"], 1),
            Err(ArgError::TagTooLong { max: 3 })
        );
    }
}
