//! Comparison of the live index with the one rebuilt from the stored entries.

use std::collections::BTreeMap;

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
    let ex = |v: &[&Vec<u8>]| {
        v.iter()
            .take(EXAMPLES)
            .map(|k| format!("'{}'", show(k)))
            .collect::<Vec<_>>()
            .join(", ")
    };
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
