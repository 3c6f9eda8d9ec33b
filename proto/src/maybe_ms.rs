//! A time in milliseconds that may be unset, in 8 bytes: `Option<u64>`
//! takes 16, and a root keeps a dozen such times for each of thousands of
//! peers and their paths.

/// A time in ms, or none (`u64::MAX` stands for none: no clock reaches it).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MaybeMs(u64);

impl MaybeMs {
    /// No time.
    pub const NONE: Self = Self(u64::MAX);

    /// The time `ms` (`u64::MAX - 1` at most).
    pub fn at(ms: u64) -> Self {
        Self(ms.min(u64::MAX - 1))
    }

    /// The time, if set.
    pub fn get(self) -> Option<u64> {
        (self.0 != u64::MAX).then_some(self.0)
    }

    /// Whether a time is set.
    pub fn is_some(self) -> bool {
        self.0 != u64::MAX
    }

    /// Whether no time is set.
    pub fn is_none(self) -> bool {
        self.0 == u64::MAX
    }

    /// The time, if set, leaving none (as `Option::take`).
    pub fn take(&mut self) -> Option<u64> {
        std::mem::take(self).get()
    }

    /// The time set, else `ms` (which is then kept), as `Option::get_or_insert`.
    pub fn get_or_insert(&mut self, ms: u64) -> u64 {
        if self.is_none() {
            *self = Self::at(ms);
        }
        self.0
    }
}

impl Default for MaybeMs {
    fn default() -> Self {
        Self::NONE
    }
}

impl From<Option<u64>> for MaybeMs {
    fn from(ms: Option<u64>) -> Self {
        ms.map_or(Self::NONE, Self::at)
    }
}

impl std::fmt::Debug for MaybeMs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_holds_any_time_but_the_last_and_none() {
        assert_eq!(MaybeMs::default().get(), None);
        assert_eq!(MaybeMs::at(0).get(), Some(0));
        assert_eq!(MaybeMs::at(u64::MAX).get(), Some(u64::MAX - 1));
        assert_eq!(MaybeMs::from(Some(7)).get(), Some(7));
        assert!(MaybeMs::from(None).is_none());
        let mut t = MaybeMs::NONE;
        assert_eq!(t.get_or_insert(5), 5);
        assert_eq!(t.get_or_insert(9), 5);
        assert_eq!(std::mem::size_of::<MaybeMs>(), 8);
    }
}
