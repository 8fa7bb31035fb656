//! TCACHE.TAGCARD and TCACHE.TAGSCAN: read the tag index, counting only live
//! entries.

use redis_module::{Context, RedisString, RedisValue};

use crate::core::options::parse_in_range;
use crate::errors::{Error, Reply};
use crate::glue::acl::{self, KeyAccess};
use crate::glue::api::{self, Caller};
use crate::state::indexes;

/// The caller, when it may not read every key: what a tag reaches must then be
/// filtered by its key permissions (other tenants' keys are neither listed
/// nor counted). `None` for a caller that reads everything.
fn restricted_reader(ctx: &Context) -> Option<Caller> {
    if acl::may_on_prefix(ctx, b"", KeyAccess::Read) {
        return None;
    }
    Caller::current(ctx)
}

/// TCACHE.TAGCARD tag
pub fn tagcard(ctx: &Context, args: Vec<RedisString>) -> Reply {
    if args.len() != 2 {
        return Err(Error::WrongArity);
    }
    let db = api::selected_db(ctx);
    let now = api::now_ms();
    let tag = args[1].as_slice();
    let busy = || Error::IndexBusy;
    let Some(caller) = restricted_reader(ctx) else {
        let n = indexes::with_db(db, |ix| ix.tag_card(tag, now)).ok_or_else(busy)?;
        return Ok(RedisValue::Integer(n as i64));
    };
    // Only the keys this caller may read: a walk of the whole tag.
    let mut n = 0i64;
    let mut cursor = 0;
    loop {
        let (next, keys) =
            indexes::with_db(db, |ix| ix.tag_scan(tag, cursor, 1024, now)).ok_or_else(busy)?;
        n += keys
            .iter()
            .filter(|k| caller.may_read(&api::string(ctx, k)))
            .count() as i64;
        if next == 0 {
            return Ok(RedisValue::Integer(n));
        }
        cursor = next;
    }
}

/// An unsigned decimal cursor, digits only.
fn parse_cursor(raw: &[u8]) -> Option<u64> {
    if raw.is_empty() || !raw.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(raw).ok()?.parse().ok()
}

const DEFAULT_COUNT: usize = 10;

/// TCACHE.TAGSCAN tag cursor [COUNT count]
pub fn tagscan(ctx: &Context, args: Vec<RedisString>) -> Reply {
    if args.len() != 3 && args.len() != 5 {
        return Err(Error::WrongArity);
    }
    let cursor = parse_cursor(args[2].as_slice()).ok_or(Error::InvalidCursor)?;
    let mut count = DEFAULT_COUNT;
    if args.len() == 5 {
        if !args[3].as_slice().eq_ignore_ascii_case(b"COUNT") {
            return Err(Error::Syntax);
        }
        count = parse_in_range(args[4].as_slice(), 1, i64::MAX)? as usize;
    }
    let db = api::selected_db(ctx);
    let now = api::now_ms();
    let (next, mut keys) =
        indexes::with_db(db, |ix| ix.tag_scan(args[1].as_slice(), cursor, count, now))
            .ok_or(Error::IndexBusy)?;
    if let Some(caller) = restricted_reader(ctx) {
        keys.retain(|k| caller.may_read(&api::string(ctx, k)));
    }
    Ok(RedisValue::Array(vec![
        RedisValue::BulkString(next.to_string()),
        RedisValue::Array(
            keys.iter()
                .map(|k| RedisValue::StringBuffer(k.to_vec()))
                .collect(),
        ),
    ]))
}
