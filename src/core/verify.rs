//! Comparison of the live index with the one rebuilt from the stored entries.

use std::collections::{BTreeMap, BTreeSet};

use crate::core::index::Corruption;

/// key -> sorted tags.
pub type Snapshot = BTreeMap<Vec<u8>, Vec<Vec<u8>>>;

const EXAMPLES: usize = 3;

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `None` when equal, otherwise a one-line description with counts and examples.
pub fn diff(db: i32, live: &Snapshot, rebuilt: &Snapshot) -> Option<String> {
    let missing: Vec<&Vec<u8>> = rebuilt.keys().filter(|k| !live.contains_key(*k)).collect();
    let extra: Vec<&Vec<u8>> = live.keys().filter(|k| !rebuilt.contains_key(*k)).collect();
    let wrong_tags: Vec<&Vec<u8>> = rebuilt
        .iter()
        .filter(|(k, tags)| live.get(*k).is_some_and(|t| t != *tags))
        .map(|(k, _)| k)
        .collect();
    if missing.is_empty() && extra.is_empty() && wrong_tags.is_empty() {
        return None;
    }
    let ex = examples;
    Some(format!(
        "db {db}: {} entries not indexed [{}], {} indexed keys not live entries [{}], {} with wrong tags [{}]",
        missing.len(),
        ex(&missing),
        extra.len(),
        ex(&extra),
        wrong_tags.len(),
        ex(&wrong_tags)
    ))
}

/// `None` when the entries queued for reclaim are exactly the dead ones.
pub fn diff_dead(db: i32, queued: &BTreeSet<Vec<u8>>, dead: &BTreeSet<Vec<u8>>) -> Option<String> {
    let lost: Vec<&Vec<u8>> = dead.difference(queued).collect();
    let wrong: Vec<&Vec<u8>> = queued.difference(dead).collect();
    if lost.is_empty() && wrong.is_empty() {
        return None;
    }
    Some(format!(
        "db {db}: {} dead entries not queued for reclaim [{}], {} queued entries not dead [{}]",
        lost.len(),
        examples(&lost),
        wrong.len(),
        examples(&wrong)
    ))
}

/// `None` when the snapshot found nothing broken inside the index.
pub fn corruption(db: i32, c: &Corruption) -> Option<String> {
    if c.is_clear() {
        return None;
    }
    Some(format!(
        "db {db}: index corrupt: {} tag or role members lead to no indexed key, \
         {} slab records and key map entries do not pair up",
        c.dangling_ids, c.unpaired_records
    ))
}

fn examples(v: &[&Vec<u8>]) -> String {
    v.iter()
        .take(EXAMPLES)
        .map(|k| format!("'{}'", show(k)))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(v: &[(&str, &[&str])]) -> Snapshot {
        v.iter()
            .map(|(k, t)| {
                (
                    k.as_bytes().to_vec(),
                    t.iter().map(|x| x.as_bytes().to_vec()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn dead_entries_must_be_exactly_the_queued_ones() {
        let set = |v: &[&str]| v.iter().map(|s| s.as_bytes().to_vec()).collect();
        assert_eq!(diff_dead(0, &set(&["a"]), &set(&["a"])), None);
        assert_eq!(
            diff_dead(1, &set(&["a", "q"]), &set(&["a", "d"])).as_deref(),
            Some("db 1: 1 dead entries not queued for reclaim ['d'], 1 queued entries not dead ['q']")
        );
    }

    #[test]
    fn corruption_is_described_with_its_counts() {
        assert_eq!(corruption(0, &Corruption::default()), None);
        let c = Corruption {
            dangling_ids: 2,
            unpaired_records: 1,
        };
        assert_eq!(
            corruption(4, &c).as_deref(),
            Some(
                "db 4: index corrupt: 2 tag or role members lead to no indexed key, \
                 1 slab records and key map entries do not pair up"
            )
        );
    }

    #[test]
    fn equal_snapshots_have_no_diff() {
        let a = snap(&[("k", &["a", "b"])]);
        assert_eq!(diff(0, &a, &a.clone()), None);
    }

    #[test]
    fn differences_are_counted_with_examples() {
        let live = snap(&[("k1", &["a"]), ("ghost", &[])]);
        let rebuilt = snap(&[("k1", &["b"]), ("k2", &[])]);
        let d = diff(3, &live, &rebuilt).unwrap_or_else(|| panic!("no diff"));
        assert_eq!(
            d,
            "db 3: 1 entries not indexed ['k2'], 1 indexed keys not live entries ['ghost'], 1 with wrong tags ['k1']"
        );
    }
}
