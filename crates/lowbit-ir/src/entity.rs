//! Typed `u32` entity ids and the arenas that own entity data.

use std::marker::PhantomData;

/// A typed index into an [`Arena`].
pub trait EntityId: Copy + Eq + Ord + std::hash::Hash + std::fmt::Debug {
    /// Builds the id from its index.
    fn new(index: usize) -> Self;
    /// The index of the id.
    fn index(self) -> usize;
}

/// Declares a `u32` entity id type.
#[macro_export]
macro_rules! entity {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
        pub struct $name(u32);
        impl $crate::entity::EntityId for $name {
            fn new(index: usize) -> Self {
                $name(u32::try_from(index).expect("more than 2^32 entities"))
            }
            fn index(self) -> usize {
                self.0 as usize
            }
        }
    };
}

/// An append-only map from ids to data (Cranelift's `PrimaryMap`).
#[derive(Clone, Debug)]
pub struct Arena<K, V> {
    items: Vec<V>,
    _k: PhantomData<K>,
}

impl<K: EntityId, V> Default for Arena<K, V> {
    fn default() -> Self {
        Arena {
            items: Vec::new(),
            _k: PhantomData,
        }
    }
}

impl<K: EntityId, V> Arena<K, V> {
    /// Adds an item and returns its id.
    pub fn push(&mut self, v: V) -> K {
        self.items.push(v);
        K::new(self.items.len() - 1)
    }
    /// Number of items ever pushed.
    pub fn len(&self) -> usize {
        self.items.len()
    }
    /// True when nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    /// The item with id `k`, if it exists.
    pub fn get(&self, k: K) -> Option<&V> {
        self.items.get(k.index())
    }
    /// Ids and items in id order.
    pub fn iter(&self) -> impl Iterator<Item = (K, &V)> {
        self.items.iter().enumerate().map(|(i, v)| (K::new(i), v))
    }
}

impl<K: EntityId, V> std::ops::Index<K> for Arena<K, V> {
    type Output = V;
    fn index(&self, k: K) -> &V {
        &self.items[k.index()]
    }
}

impl<K: EntityId, V> std::ops::IndexMut<K> for Arena<K, V> {
    fn index_mut(&mut self, k: K) -> &mut V {
        &mut self.items[k.index()]
    }
}
