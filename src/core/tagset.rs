//! The members of one tag (or role): entry ids in a compressed bitmap, or
//! inline while there is only one. Per-object tags (`user:42`) mostly have a
//! single entry, and a bitmap of one id costs two allocations.

use roaring::RoaringBitmap;

use crate::core::slab::Id;

#[derive(Default)]
pub enum TagSet {
    #[default]
    Empty,
    One(Id),
    Many(RoaringBitmap),
}

impl TagSet {
    /// Adds `id`; false if it was there.
    pub fn insert(&mut self, id: Id) -> bool {
        match self {
            TagSet::Empty => {
                *self = TagSet::One(id);
                true
            }
            TagSet::One(one) if *one == id => false,
            TagSet::One(one) => {
                *self = TagSet::Many(RoaringBitmap::from_iter([*one, id]));
                true
            }
            TagSet::Many(b) => b.insert(id),
        }
    }

    /// Removes `id`; false if it was not there.
    pub fn remove(&mut self, id: Id) -> bool {
        match self {
            TagSet::One(one) if *one == id => {
                *self = TagSet::Empty;
                true
            }
            TagSet::Many(b) => {
                let removed = b.remove(id);
                if removed && b.len() <= 1 {
                    *self = b.min().map_or(TagSet::Empty, TagSet::One);
                }
                removed
            }
            _ => false,
        }
    }

    pub fn contains(&self, id: Id) -> bool {
        match self {
            TagSet::Empty => false,
            TagSet::One(one) => *one == id,
            TagSet::Many(b) => b.contains(id),
        }
    }

    pub fn len(&self) -> u64 {
        match self {
            TagSet::Empty => 0,
            TagSet::One(_) => 1,
            TagSet::Many(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        matches!(self, TagSet::Empty)
    }

    /// The ids >= `from`, ascending.
    pub fn iter_from(&self, from: Id) -> Iter<'_> {
        match self {
            TagSet::Empty => Iter::One(None),
            TagSet::One(one) => Iter::One((*one >= from).then_some(*one)),
            TagSet::Many(b) => {
                let mut it = b.iter();
                it.advance_to(from);
                Iter::Many(it)
            }
        }
    }

    pub fn iter(&self) -> Iter<'_> {
        self.iter_from(0)
    }

    /// Adds every member to `into`.
    pub fn add_to(&self, into: &mut RoaringBitmap) {
        match self {
            TagSet::Empty => {}
            TagSet::One(one) => {
                into.insert(*one);
            }
            TagSet::Many(b) => *into |= b,
        }
    }

    pub fn into_bitmap(self) -> RoaringBitmap {
        match self {
            TagSet::Empty => RoaringBitmap::new(),
            TagSet::One(one) => RoaringBitmap::from_iter([one]),
            TagSet::Many(b) => b,
        }
    }
}

pub enum Iter<'a> {
    One(Option<Id>),
    Many(roaring::bitmap::Iter<'a>),
}

impl Iterator for Iter<'_> {
    type Item = Id;

    fn next(&mut self) -> Option<Id> {
        match self {
            Iter::One(one) => one.take(),
            Iter::Many(it) => it.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_from_one_inline_id_and_shrinks_back() {
        let mut s = TagSet::default();
        assert!(s.is_empty());
        assert_eq!(s.len(), 0);
        assert!(s.insert(7));
        assert!(!s.insert(7));
        assert!(matches!(s, TagSet::One(7)));
        assert!(s.insert(3));
        assert!(matches!(s, TagSet::Many(_)));
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![3, 7]);
        assert_eq!(s.iter_from(4).collect::<Vec<_>>(), vec![7]);
        assert!(!s.remove(99));
        assert!(s.remove(3));
        assert!(matches!(s, TagSet::One(7)), "back to one inline id");
        assert_eq!(s.iter_from(8).count(), 0);
        let mut all = RoaringBitmap::from_iter([1]);
        s.add_to(&mut all);
        assert_eq!(all.len(), 2);
        assert!(s.remove(7));
        assert!(s.is_empty() && !s.contains(7));
        assert!(!s.remove(7));
        assert!(s.into_bitmap().is_empty());
    }
}
