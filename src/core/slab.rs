//! Records addressed by small dense ids, in pages that go back to the
//! allocator once empty.
//!
//! The index gives every entry a `u32` id from here. Ids are dense, so the
//! index can keep tag members in compressed bitmaps, and a record costs its
//! own size with no hash-table slack. A freed id is reused, the lowest page
//! first, so after a mass delete the live ids stay packed and the emptied
//! pages are freed.

use std::collections::BTreeSet;

const PAGE_BITS: u32 = 12;
const PAGE: usize = 1 << PAGE_BITS;

pub type Id = u32;

struct Page<T> {
    /// Grows to `PAGE` slots; `None` is a free slot listed in `free`.
    slots: Vec<Option<T>>,
    free: Vec<u16>,
    live: usize,
}

impl<T> Default for Page<T> {
    fn default() -> Page<T> {
        Page {
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
        }
    }
}

impl<T> Page<T> {
    fn has_room(&self) -> bool {
        !self.free.is_empty() || self.slots.len() < PAGE
    }
}

pub struct Slab<T> {
    pages: Vec<Page<T>>,
    /// Pages with a free slot (emptied pages included), lowest used first.
    open: BTreeSet<u32>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Slab<T> {
        Slab {
            pages: Vec::new(),
            open: BTreeSet::new(),
            len: 0,
        }
    }
}

fn split(id: Id) -> (usize, usize) {
    ((id >> PAGE_BITS) as usize, id as usize & (PAGE - 1))
}

impl<T> Slab<T> {
    /// Stores `value`; `None` only when every one of the 2^32 ids is taken.
    pub fn insert(&mut self, value: T) -> Option<Id> {
        let p = match self.open.first() {
            Some(&p) => p,
            None => {
                let p = u32::try_from(self.pages.len())
                    .ok()
                    .filter(|p| *p < (1 << (32 - PAGE_BITS)))?;
                self.pages.push(Page::default());
                self.open.insert(p);
                p
            }
        };
        let page = self.pages.get_mut(p as usize)?;
        let slot = match page.free.pop() {
            Some(s) => {
                let s = usize::from(s);
                *page.slots.get_mut(s)? = Some(value);
                s
            }
            None => {
                page.slots.push(Some(value));
                page.slots.len() - 1
            }
        };
        page.live += 1;
        if !page.has_room() {
            self.open.remove(&p);
        }
        self.len += 1;
        Some(p << PAGE_BITS | slot as u32)
    }

    pub fn get(&self, id: Id) -> Option<&T> {
        let (p, s) = split(id);
        self.pages.get(p)?.slots.get(s)?.as_ref()
    }

    pub fn get_mut(&mut self, id: Id) -> Option<&mut T> {
        let (p, s) = split(id);
        self.pages.get_mut(p)?.slots.get_mut(s)?.as_mut()
    }

    pub fn remove(&mut self, id: Id) -> Option<T> {
        let (p, s) = split(id);
        let page = self.pages.get_mut(p)?;
        let value = page.slots.get_mut(s)?.take()?;
        page.live -= 1;
        self.len -= 1;
        if page.live == 0 {
            // Give the page back; it is rebuilt if ids are needed again.
            *page = Page::default();
        } else {
            // `s` < PAGE, so it fits.
            page.free.push(s as u16);
        }
        self.open.insert(p as u32);
        // Trailing empty pages go entirely.
        while self.pages.last().is_some_and(|pg| pg.live == 0) {
            self.pages.pop();
            self.open.remove(&(self.pages.len() as u32));
        }
        if self.pages.is_empty() {
            self.pages = Vec::new();
        }
        Some(value)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn iter(&self) -> impl Iterator<Item = (Id, &T)> {
        self.pages.iter().enumerate().flat_map(|(p, page)| {
            page.slots
                .iter()
                .enumerate()
                .filter_map(move |(s, v)| Some(((p << PAGE_BITS | s) as Id, v.as_ref()?)))
        })
    }

    /// Heap bytes of the slots and free lists (not what the records own).
    pub fn heap_bytes(&self) -> usize {
        let slots: usize = self
            .pages
            .iter()
            .map(|p| p.slots.capacity() * std::mem::size_of::<Option<T>>() + p.free.capacity() * 2)
            .sum();
        slots + self.pages.capacity() * std::mem::size_of::<Page<T>>() + self.open.len() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_reused_and_empty_pages_freed() {
        let mut s: Slab<u64> = Slab::default();
        let ids: Vec<Id> = (0..(PAGE as u64 * 3))
            .map(|v| s.insert(v).unwrap_or(Id::MAX))
            .collect();
        assert_eq!(ids.first(), Some(&0));
        assert_eq!(ids.last(), Some(&(PAGE as u32 * 3 - 1)));
        assert_eq!(s.get(5), Some(&5));
        // Empty the middle page: it is freed, and its ids come back first.
        for id in PAGE as u32..2 * PAGE as u32 {
            assert_eq!(s.remove(id), Some(u64::from(id)));
        }
        assert_eq!(s.remove(PAGE as u32), None, "already gone");
        assert_eq!(s.get(PAGE as u32 + 1), None);
        assert_eq!(s.len(), PAGE * 2);
        assert_eq!(s.insert(7), Some(PAGE as u32));
        // A freed slot inside a page is reused before the page grows.
        assert_eq!(s.remove(3), Some(3));
        assert_eq!(s.insert(8), Some(3));
        assert_eq!(s.get(3), Some(&8));
        let listed: Vec<Id> = s.iter().map(|(id, _)| id).collect();
        assert_eq!(listed.len(), s.len());
        // Emptying everything gives every page back.
        for id in listed {
            assert!(s.remove(id).is_some());
        }
        assert_eq!(s.len(), 0);
        assert!(s.pages.is_empty());
        assert!(s.open.is_empty());
        assert_eq!(s.insert(1), Some(0));
    }

    #[test]
    fn ids_out_of_range_are_refused_without_panicking() {
        let mut s: Slab<u8> = Slab::default();
        assert_eq!(s.get(Id::MAX), None);
        assert_eq!(s.remove(Id::MAX), None);
        assert!(s.get_mut(12345).is_none());
    }
}
