//! TCACHE.GATE.SET / GET / DEL / LIST / CHECK: quality gates.

use redis_module::{Context, RedisString, RedisValue};

use crate::core::gate::Gate;
use crate::errors::{Error, NoPerm, Reply};
use crate::glue::acl::{self, KeyAccess};
use crate::state::gates::{self, BUILTIN};

/// NOPERM unless the caller may write every key a gate governs: those under
/// its prefix, or every key for a gate without one (any SET may name it).
fn check_may_govern(ctx: &Context, prefix: Option<&[u8]>) -> Result<(), Error> {
    if acl::may_on_prefix(ctx, prefix.unwrap_or_default(), KeyAccess::Write) {
        Ok(())
    } else {
        Err(Error::NoPerm(NoPerm::Gate))
    }
}

/// The prefix of the gate named `name`, if it exists: `Some(None)` for a gate
/// without a prefix.
fn governed(name: &[u8]) -> Option<Option<Vec<u8>>> {
    gates::lock().get(name).map(|g| g.prefix.clone())
}

/// TCACHE.GATE.SET name schema [PREFIX prefix]
pub fn set(ctx: &Context, args: Vec<RedisString>) -> Reply {
    if args.len() != 3 && args.len() != 5 {
        return Err(Error::WrongArity);
    }
    let name = args[1].as_slice();
    let prefix = match args.get(3) {
        Some(word) if word.as_slice().eq_ignore_ascii_case(b"PREFIX") => {
            args.get(4).map(|p| p.as_slice().to_vec())
        }
        Some(_) => return Err(Error::Syntax),
        None => None,
    };
    if BUILTIN.contains(&name) {
        return Err(Error::BuiltinGate(name.to_vec()));
    }
    // Replacing a gate changes what its old prefix governs too.
    if let Some(old) = governed(name) {
        check_may_govern(ctx, old.as_deref())?;
    }
    check_may_govern(ctx, prefix.as_deref())?;
    let gate = Gate::compile(name, args[2].as_slice()).map_err(Error::InvalidSchema)?;
    gates::install(name.to_vec(), gate, prefix);
    ctx.replicate_verbatim();
    Ok(RedisValue::SimpleStringStatic("OK"))
}

/// TCACHE.GATE.GET name
pub fn get(_ctx: &Context, args: Vec<RedisString>) -> Reply {
    if args.len() != 2 {
        return Err(Error::WrongArity);
    }
    Ok(gates::lock()
        .get(args[1].as_slice())
        .map_or(RedisValue::Null, |g| {
            RedisValue::StringBuffer(g.gate.schema().to_vec())
        }))
}

/// TCACHE.GATE.DEL name
pub fn del(ctx: &Context, args: Vec<RedisString>) -> Reply {
    if args.len() != 2 {
        return Err(Error::WrongArity);
    }
    let Some(old) = governed(args[1].as_slice()) else {
        return Ok(RedisValue::Integer(0));
    };
    check_may_govern(ctx, old.as_deref())?;
    let removed = gates::lock().remove(args[1].as_slice()).is_some();
    if removed {
        ctx.replicate_verbatim();
    }
    Ok(RedisValue::Integer(removed.into()))
}

/// TCACHE.GATE.LIST
pub fn list(_ctx: &Context, args: Vec<RedisString>) -> Reply {
    if args.len() != 1 {
        return Err(Error::WrongArity);
    }
    Ok(RedisValue::Array(
        gates::lock()
            .keys()
            .map(|n| RedisValue::StringBuffer(n.clone()))
            .collect(),
    ))
}

/// TCACHE.GATE.CHECK name value
pub fn check(_ctx: &Context, args: Vec<RedisString>) -> Reply {
    if args.len() != 3 {
        return Err(Error::WrongArity);
    }
    gates::dry_run(args[1].as_slice(), args[2].as_slice())?;
    Ok(RedisValue::SimpleStringStatic("OK"))
}
