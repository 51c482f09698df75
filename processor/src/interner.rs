//! Task-local string interning: ids become small integers in keys and timers.

use rustc_hash::FxHashMap;

use crate::Trim;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An interned string.
pub type Sym = u32;

/// Maps strings to [`Sym`]s and back. A released symbol's slot is reused.
#[derive(Default)]
pub struct Interner {
    ids: FxHashMap<Box<str>, Sym>,
    names: Vec<Option<Box<str>>>,
    free: Vec<Sym>,
}

impl Interner {
    /// The symbol of `name`, interning it if new.
    pub fn intern(&mut self, name: &str) -> Sym {
        if let Some(&sym) = self.ids.get(name) {
            return sym;
        }
        let sym = match self.free.pop() {
            Some(sym) => {
                self.names[sym as usize] = Some(name.into());
                sym
            }
            None => {
                self.names.push(Some(name.into()));
                (self.names.len() - 1) as Sym
            }
        };
        self.ids.insert(name.into(), sym);
        sym
    }

    /// Gives back the spare capacity of released names (see [`Trim`]).
    pub fn trim(&mut self) {
        self.ids.trim();
        self.free.trim();
    }

    /// The symbol of `name`, if it was interned.
    pub fn get(&self, name: &str) -> Option<Sym> {
        self.ids.get(name).copied()
    }

    /// The string of a symbol this interner made ("" once released).
    pub fn name(&self, sym: Sym) -> &str {
        self.names.get(sym as usize).and_then(Option::as_deref).unwrap_or("")
    }

    /// Forgets `sym`, whose slot a later name may take: the caller holds no
    /// reference to it any more (retention).
    pub fn release(&mut self, sym: Sym) {
        if let Some(name) = self.names.get_mut(sym as usize).and_then(Option::take) {
            self.ids.remove(&name);
            self.free.push(sym);
        }
    }
}

/// Only the names are stored (released slots as none); the lookup map and
/// the free slots are rebuilt on load.
impl Serialize for Interner {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.names.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Interner {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let names = Vec::<Option<Box<str>>>::deserialize(deserializer)?;
        let mut ids = FxHashMap::default();
        let mut free = Vec::new();
        for (sym, name) in names.iter().enumerate() {
            match name {
                Some(name) => {
                    ids.insert(name.clone(), sym as Sym);
                }
                None => free.push(sym as Sym),
            }
        }
        // Any order is correct; reversed, `pop` takes the lowest slot first.
        free.reverse();
        Ok(Interner { ids, names, free })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_released_slot_is_reused_and_survives_a_snapshot() {
        let mut names = Interner::default();
        let (a, b) = (names.intern("a"), names.intern("b"));
        names.release(a);
        assert_eq!((names.get("a"), names.name(a), names.get("b")), (None, "", Some(b)));
        let c = names.intern("c");
        assert_eq!(c, a, "the released slot is taken again");
        names.release(b);
        let bytes = postcard::to_allocvec(&names).expect("the names serialize");
        let mut loaded: Interner = postcard::from_bytes(&bytes).expect("the names load");
        assert_eq!((loaded.get("c"), loaded.get("b"), loaded.name(c)), (Some(c), None, "c"));
        assert_eq!(loaded.intern("d"), b, "the free slot is known after a load");
    }
}
