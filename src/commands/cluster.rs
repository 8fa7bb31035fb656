//! The cluster-wide invalidations: TCACHE.INVALTAG, TCACHE.STALETAG,
//! TCACHE.INVALPREFIX, PERM.INVALROLE and PERM.INVALALL. Stand-alone, each is
//! its local command. In cluster mode the node a client calls applies it, then
//! coordinates it with every other slot owner (`glue::cluster`) and answers
//! with the cluster-wide count once every slot's owner confirmed it.

use redis_module::{Context, RedisString, RedisValue};

use super::{fetch, inval, perm};
use crate::core::cluster::OpKind;
use crate::errors::{Error, Reply};
use crate::glue::api;
use crate::glue::blocking::can_block;
use crate::glue::cluster;

pub fn install(ctx: &Context) {
    cluster::install(ctx, apply_local);
}

/// The command on this node only; in cluster mode the node remembers it for
/// a while (see `glue::cluster::recently_invalidated`).
fn apply_local(ctx: &Context, kind: OpKind, args: Vec<RedisString>) -> Reply {
    // Stand-alone, nothing is remembered: no copy of the names either.
    let names: Option<Vec<Vec<u8>>> = cluster::coordinated()
        .then(|| args.iter().skip(1).map(|a| a.as_slice().to_vec()).collect());
    let reply = match kind {
        OpKind::InvalTag => inval::invaltag(ctx, args),
        OpKind::StaleTag => fetch::staletag(ctx, args),
        OpKind::InvalPrefix => inval::invalprefix(ctx, args),
        OpKind::InvalRole => perm::invalrole(ctx, args),
        OpKind::InvalAll => perm::invalall(ctx, args),
    }?;
    if let Some(names) = names {
        let names: Vec<&[u8]> = names.iter().map(|n| n.as_slice()).collect();
        cluster::note_applied(kind, &names);
    }
    Ok(reply)
}

fn wide(ctx: &Context, kind: OpKind, args: Vec<RedisString>) -> Reply {
    if !cluster::coordinates(ctx) {
        return apply_local(ctx, kind, args);
    }
    if !can_block(ctx) {
        return Err(Error::ClusterWideCannotBlock);
    }
    let raw: Vec<Vec<u8>> = args.iter().map(|a| a.as_slice().to_vec()).collect();
    let user = api::current_user_name(ctx).unwrap_or_else(|| b"default".to_vec());
    let local = match apply_local(ctx, kind, args)? {
        RedisValue::Integer(n) => n,
        _ => 0,
    };
    cluster::start(ctx, kind, user, raw, local)
}

/// TCACHE.INVALTAG tag [tag ...]
pub fn invaltag(ctx: &Context, args: Vec<RedisString>) -> Reply {
    wide(ctx, OpKind::InvalTag, args)
}

/// TCACHE.STALETAG tag [tag ...]
pub fn staletag(ctx: &Context, args: Vec<RedisString>) -> Reply {
    wide(ctx, OpKind::StaleTag, args)
}

/// TCACHE.INVALPREFIX prefix
pub fn invalprefix(ctx: &Context, args: Vec<RedisString>) -> Reply {
    wide(ctx, OpKind::InvalPrefix, args)
}

/// PERM.INVALROLE role [role ...]
pub fn invalrole(ctx: &Context, args: Vec<RedisString>) -> Reply {
    wide(ctx, OpKind::InvalRole, args)
}

/// PERM.INVALALL
pub fn invalall(ctx: &Context, args: Vec<RedisString>) -> Reply {
    wide(ctx, OpKind::InvalAll, args)
}
