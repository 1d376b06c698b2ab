//! Entity name → interned id, looked up once per reading.
//!
//! Keys up to [`INLINE`] bytes (gauge and station ids nearly always are) live inside the hash
//! table's own slot, so a lookup touches the table and nothing else; longer keys go to the
//! heap. The hash is foldhash's fast hash: entity ids come from the operator's own devices,
//! and a flood of crafted ids could at worst slow one engine down.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use super::EntityId;

/// Longest key stored inline.
const INLINE: usize = 22;

/// An entity name as a hash-table key: inline when short, boxed otherwise.
#[derive(Clone)]
pub(crate) enum EntityKey {
    /// `len` bytes of UTF-8 at the start of `bytes`.
    Inline { len: u8, bytes: [u8; INLINE] },
    /// A longer name.
    Heap(Box<str>),
}

impl EntityKey {
    /// The key for a name.
    pub(crate) fn new(name: &str) -> EntityKey {
        if name.len() <= INLINE {
            let mut bytes = [0u8; INLINE];
            bytes[..name.len()].copy_from_slice(name.as_bytes());
            EntityKey::Inline {
                len: name.len() as u8,
                bytes,
            }
        } else {
            EntityKey::Heap(name.into())
        }
    }

    /// The name.
    pub(crate) fn as_str(&self) -> &str {
        match self {
            // The bytes were copied from a `&str`, so they are valid UTF-8.
            EntityKey::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..*len as usize]).unwrap_or_default()
            }
            EntityKey::Heap(s) => s,
        }
    }
}

impl std::fmt::Debug for EntityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq for EntityKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for EntityKey {}

// Hash exactly as `str` does, so that a `&str` can look a key up (`Borrow<str>`).
impl Hash for EntityKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl Borrow<str> for EntityKey {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

/// Entity name → id.
pub(crate) type IdMap = HashMap<EntityKey, EntityId, foldhash::fast::RandomState>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_names_are_found_by_str() {
        let mut map = IdMap::default();
        let long = "a-rather-long-entity-identifier-of-forty-bytes";
        for (i, name) in ["", "G1", "st00042", "exactly-22-bytes-long!", long]
            .iter()
            .enumerate()
        {
            map.insert(EntityKey::new(name), i as EntityId);
        }
        assert!(matches!(
            EntityKey::new("exactly-22-bytes-long!"),
            EntityKey::Inline { .. }
        ));
        assert!(matches!(EntityKey::new(long), EntityKey::Heap(_)));
        assert_eq!(map.get("st00042"), Some(&2));
        assert_eq!(map.get(long), Some(&4));
        assert_eq!(map.get(""), Some(&0));
        assert_eq!(map.get("st0004"), None);
        assert_eq!(EntityKey::new("Zürich-3").as_str(), "Zürich-3");
    }
}
