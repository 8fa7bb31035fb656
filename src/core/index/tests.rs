use super::*;

fn t<'a>(s: &'a [&'static str]) -> impl Iterator<Item = &'static [u8]> + Clone + 'a {
    s.iter().map(|x| x.as_bytes())
}

fn names(v: Vec<Key>) -> Vec<String> {
    let mut v: Vec<String> = v
        .iter()
        .map(|k| String::from_utf8_lossy(k).into())
        .collect();
    v.sort();
    v
}

#[test]
fn insert_and_remove_keep_tags_exact() {
    let mut ix = DbIndex::default();
    ix.insert(b"k1", Space::Tags, t(&["a", "b"]), NO_EXPIRE, 1);
    ix.insert(b"k2", Space::Tags, t(&["b"]), NO_EXPIRE, 1);
    assert_eq!(ix.tag_card(b"a", 0), 1);
    assert_eq!(ix.tag_card(b"b", 0), 2);
    assert!(ix.remove(b"k1", t(&["a", "b"])));
    assert_eq!(ix.tag_count(), 1, "an emptied tag is dropped");
    assert!(!ix.remove(b"k1", t(&["a", "b"])));
    assert!(ix.remove(b"k2", t(&["b"])));
    assert!(ix.is_empty());
    assert_eq!(ix.tag_count(), 0);
    assert_eq!(ix.heap_bytes(), 0);
}

#[test]
fn an_overwrite_keeps_the_id_and_moves_only_changed_tags() {
    let mut ix = DbIndex::default();
    let mut id = ix
        .insert(b"k", Space::Tags, t(&["a", "b", "c"]), NO_EXPIRE, 1)
        .map_or(Id::MAX, |a| a.id);
    let old = |space, tags: &'static [&'static str], id| {
        Some(Old {
            space,
            tags: tags.iter().map(|x| x.as_bytes()),
            id,
        })
    };
    ix.insert(b"other", Space::Tags, t(&["b"]), NO_EXPIRE, 2);
    let (_, before) = ix.tag_scan(b"b", 0, 10, 0);
    id = ix
        .upsert(
            b"k",
            old(Space::Tags, &["a", "b", "c"], id),
            Space::Tags,
            t(&["b", "d"]),
            7,
            3,
        )
        .map_or(Id::MAX, |a| a.id);
    let (_, after) = ix.tag_scan(b"b", 0, 10, 0);
    assert_eq!(names(before), names(after), "same ids, same order");
    assert_eq!(ix.tag_card(b"a", 0), 0);
    assert_eq!(ix.tag_card(b"d", 0), 1);
    assert_eq!(ix.tag_count(), 2);
    let snap = ix.snapshot().entries;
    assert_eq!(
        snap.get(&b"k"[..]),
        Some(&vec![b"b".to_vec(), b"d".to_vec()])
    );
    // Into another space: a full re-insert.
    id = ix
        .upsert(
            b"k",
            old(Space::Tags, &["b", "d"], id),
            Space::Roles,
            t(&["r"]),
            NO_EXPIRE,
            4,
        )
        .map_or(Id::MAX, |a| a.id);
    assert_eq!(ix.keys_with_any(Space::Roles, &[b"r"]).len(), 1);
    assert_eq!(ix.tag_card(b"d", 0), 0);
    // A dead entry overwritten comes back alive, in every tag.
    id = ix
        .upsert(
            b"k",
            old(Space::Roles, &["r"], id),
            Space::Tags,
            t(&["big"]),
            NO_EXPIRE,
            5,
        )
        .map_or(Id::MAX, |a| a.id);
    assert_eq!(ix.invalidate(Space::Tags, &[b"big"], 10), 1);
    ix.upsert(
        b"k",
        old(Space::Tags, &["big"], id),
        Space::Tags,
        t(&["big"]),
        NO_EXPIRE,
        11,
    );
    assert_eq!(ix.tag_card(b"big", 0), 1);
    assert_eq!(ix.dead().pending(), 0);
    assert_eq!(ix.live_len(), 2);
}

#[test]
fn double_insert_does_not_leave_dangling_ids() {
    let mut ix = DbIndex::default();
    ix.insert(b"k", Space::Tags, t(&["a"]), NO_EXPIRE, 1);
    ix.insert(b"k", Space::Tags, t(&["b"]), NO_EXPIRE, 1);
    assert_eq!(ix.tag_card(b"a", 0), 0);
    assert_eq!(ix.tag_count(), 1);
    let snap = ix.snapshot().entries;
    assert_eq!(snap.get(&b"k"[..]), Some(&vec![b"b".to_vec()]));
}

#[test]
fn roles_and_tags_are_separate_namespaces() {
    let mut ix = DbIndex::default();
    ix.insert(b"perm:1", Space::Roles, t(&["admin"]), NO_EXPIRE, 1);
    ix.insert(b"page", Space::Tags, t(&["admin"]), NO_EXPIRE, 1);
    assert_eq!(
        names(ix.keys_with_any(Space::Roles, &[b"admin"])),
        vec!["perm:1"]
    );
    assert_eq!(
        names(ix.keys_with_any(Space::Tags, &[b"admin"])),
        vec!["page"]
    );
    assert_eq!(names(ix.keys_in_space(Space::Roles)), vec!["perm:1"]);
    assert!(ix.remove(b"perm:1", t(&["admin"])));
    assert!(ix.keys_with_any(Space::Roles, &[b"admin"]).is_empty());
    assert_eq!(ix.tag_card(b"admin", 0), 1);
    assert!(ix.heap_bytes() > 0);
    assert!(ix.remove(b"page", t(&["admin"])));
    assert_eq!(ix.heap_bytes(), 0);
}

#[test]
fn union_of_tags_counts_each_key_once() {
    let mut ix = DbIndex::default();
    ix.insert(b"k1", Space::Tags, t(&["a", "b"]), NO_EXPIRE, 1);
    ix.insert(b"k2", Space::Tags, t(&["b"]), NO_EXPIRE, 1);
    ix.insert(b"k3", Space::Tags, t(&["c"]), NO_EXPIRE, 1);
    assert_eq!(
        names(ix.keys_with_any(Space::Tags, &[b"a", b"b"])),
        vec!["k1", "k2"]
    );
    assert!(ix.keys_with_any(Space::Tags, &[b"zz"]).is_empty());
}

#[test]
fn expired_entries_are_not_counted_or_scanned() {
    let mut ix = DbIndex::default();
    ix.insert(b"old", Space::Tags, t(&["a"]), 1000, 1);
    ix.insert(b"new", Space::Tags, t(&["a"]), 5000, 1);
    assert_eq!(ix.tag_card(b"a", 1000), 2);
    assert_eq!(ix.tag_card(b"a", 1001), 1);
    let (_, keys) = ix.tag_scan(b"a", 0, 10, 2000);
    assert_eq!(names(keys), vec!["new"]);
    ix.set_expire(b"old", NO_EXPIRE);
    assert_eq!(ix.tag_card(b"a", 9999), 1);
}

#[test]
fn tag_scan_returns_every_stable_key_once() {
    let mut ix = DbIndex::default();
    for i in 0..100 {
        ix.insert(
            format!("k{i}").as_bytes(),
            Space::Tags,
            t(&["a"]),
            NO_EXPIRE,
            1,
        );
    }
    let mut seen = Vec::new();
    let mut cursor = 0;
    let mut round = 0;
    loop {
        let (next, keys) = ix.tag_scan(b"a", cursor, 7, 0);
        seen.extend(keys);
        // Churn during the scan: remove one and add one.
        round += 1;
        let victim = format!("k{}", 99 - round);
        ix.remove(victim.as_bytes(), t(&["a"]));
        ix.insert(
            format!("n{round}").as_bytes(),
            Space::Tags,
            t(&["a"]),
            NO_EXPIRE,
            1,
        );
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let seen = names(seen);
    let mut dedup = seen.clone();
    dedup.dedup();
    assert_eq!(seen, dedup, "no key twice");
    for i in 0..(99 - round) {
        assert!(seen.contains(&format!("k{i}")), "k{i} missed");
    }
    assert_eq!(ix.check(), Ok(()));
}

#[test]
fn an_invalidated_tag_leaves_the_index_at_once_and_is_reclaimed() {
    let mut ix = DbIndex::default();
    for i in 0..10u64 {
        let tags: &[&str] = if i % 2 == 0 {
            &["big", "even"]
        } else {
            &["big"]
        };
        ix.insert(
            format!("k{i}").as_bytes(),
            Space::Tags,
            t(tags),
            NO_EXPIRE,
            i + 1,
        );
    }
    assert_eq!(ix.label_size(Space::Tags, &[b"big", b"even"]), 15);
    assert_eq!(ix.invalidate(Space::Tags, &[b"big", b"even"], 100), 10);
    assert_eq!(ix.live_len(), 0);
    assert_eq!(
        ix.tag_card(b"even", 0),
        0,
        "dead members of other tags hide"
    );
    assert!(ix.keys_with_any(Space::Tags, &[b"even"]).is_empty());
    assert!(ix.snapshot().entries.is_empty());
    assert_eq!(ix.dead_keys().len(), 10);
    // Written after the invalidation: alive.
    assert!(!ix
        .insert(b"new", Space::Tags, t(&["big"]), NO_EXPIRE, 101)
        .is_some_and(|a| a.dead));
    // Arriving with an older write (RESTORE of a dump): dead, queued.
    assert!(ix
        .insert(b"old", Space::Tags, t(&["big"]), NO_EXPIRE, 50)
        .is_some_and(|a| a.dead));
    assert_eq!(ix.dead().pending(), 11);
    let mut reclaimed = 0;
    loop {
        let keys = ix.pop_dead(4);
        if keys.is_empty() {
            break;
        }
        for k in keys {
            let tags: &[&str] = &["big", "even"];
            assert!(ix.remove(&k, t(tags)));
            reclaimed += 1;
        }
    }
    assert_eq!(reclaimed, 11);
    ix.settle_tombs();
    assert!(ix.dead().is_clear());
    assert_eq!(ix.live_len(), 1);
    assert_eq!(ix.tag_card(b"big", 0), 1);
    assert_eq!(ix.tag_count(), 1);
}

#[test]
fn a_prefix_invalidation_kills_only_older_entries_under_it() {
    let mut ix = DbIndex::default();
    for k in [&b"p:1"[..], b"p:2", b"q:1"] {
        ix.insert(k, Space::Tags, t(&["a"]), NO_EXPIRE, 1);
    }
    let ids = ix.prefix_ids(b"p:");
    assert_eq!(ix.invalidate_prefix(b"p:", ids, 10), 2);
    assert!(ix.dead().kills(b"p:3", Space::Tags, t(&[]), 9));
    assert!(!ix.dead().kills(b"p:3", Space::Tags, t(&[]), 11));
    assert_eq!(ix.tag_card(b"a", 0), 1);
    assert!(ix.prefix_ids(b"p:").is_empty(), "already dead");
    // A dead entry deleted by someone else no longer waits.
    assert!(ix.remove(b"p:1", t(&["a"])));
    assert_eq!(ix.dead().pending(), 1);
}

#[test]
fn prefix_lookup_is_ordered_and_exact() {
    let mut ix = DbIndex::default();
    for k in [&b"p:1"[..], b"p:2", b"p", b"q:1", b"p:\xff", b"p\xff"] {
        ix.insert(k, Space::Tags, t(&[]), NO_EXPIRE, 1);
    }
    let got: Vec<Vec<u8>> = ix
        .keys_with_prefix(b"p:")
        .iter()
        .map(|k| k.to_vec())
        .collect();
    assert_eq!(
        got,
        vec![b"p:1".to_vec(), b"p:2".to_vec(), b"p:\xff".to_vec()]
    );
    assert_eq!(ix.keys_with_prefix(b"").len(), 6);
    assert!(ix.keys_with_prefix(b"z").is_empty());
}

#[test]
fn reused_ids_never_mix_up_keys() {
    let mut ix = DbIndex::default();
    let key = |i: u32| format!("k{i:05}").into_bytes();
    for i in 0..10_000 {
        ix.insert(&key(i), Space::Tags, t(&["all"]), NO_EXPIRE, 1);
    }
    // Free every other id, then fill the holes with new keys.
    for i in (0..10_000).step_by(2) {
        assert!(ix.remove(&key(i), t(&["all"])));
    }
    for i in 10_000..15_000 {
        ix.insert(&key(i), Space::Tags, t(&["new"]), NO_EXPIRE, 2);
    }
    let snap = ix.snapshot();
    assert!(snap.corruption.is_clear(), "no dangling tag ids");
    assert_eq!(ix.check(), Ok(()));
    let snap = snap.entries;
    assert_eq!(snap.len(), 10_000);
    for i in 0..15_000 {
        let want: Option<Vec<Vec<u8>>> = match i {
            _ if i >= 10_000 => Some(vec![b"new".to_vec()]),
            _ if i % 2 == 1 => Some(vec![b"all".to_vec()]),
            _ => None,
        };
        assert_eq!(snap.get(&key(i)), want.as_ref(), "key {i}");
    }
    assert_eq!(ix.tag_card(b"new", 0), 5_000);
    assert_eq!(ix.keys_with_prefix(b"k1").len(), 5_000);
    assert_eq!(ix.keys_with_prefix(b"k0").len(), 5_000);
    // Everything out: nothing held.
    for i in 0..15_000 {
        ix.remove(&key(i), t(&["all", "new"]));
    }
    assert!(ix.is_empty());
    assert_eq!(ix.heap_bytes(), 0);
}

#[test]
fn corruption_is_reported_apart_from_the_entries() {
    let mut ix = DbIndex::default();
    ix.insert(b"k", Space::Tags, t(&["a"]), NO_EXPIRE, 1);
    assert_eq!(ix.check(), Ok(()));
    // Break the index by hand: tag `a` now holds an id no record has.
    if let Some(set) = ix.tags.get_mut(&b"a"[..]) {
        set.insert(999);
    }
    ix.memberships += 1;
    let snap = ix.snapshot();
    assert_eq!(
        snap.corruption,
        Corruption {
            dangling_ids: 1,
            unpaired_records: 0
        }
    );
    assert_eq!(
        snap.entries.keys().collect::<Vec<_>>(),
        vec![&b"k".to_vec()],
        "no pseudo-entry"
    );
    assert_eq!(
        ix.check(),
        Err("'a' holds id 999, no record of its space".into())
    );
}

#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "tag list not sorted and unique")]
fn debug_builds_catch_an_unsorted_tag_list_on_overwrite() {
    let mut ix = DbIndex::default();
    let id = ix
        .insert(b"k", Space::Tags, t(&["a"]), NO_EXPIRE, 1)
        .map_or(Id::MAX, |a| a.id);
    let old = Old {
        space: Space::Tags,
        tags: t(&["a"]),
        id,
    };
    ix.upsert(b"k", Some(old), Space::Tags, t(&["c", "b"]), NO_EXPIRE, 2);
}
