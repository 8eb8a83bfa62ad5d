//! The numbers that order a stream's history, as types that cannot be mixed up.
//!
//! A message that could arrive late names the [`Epoch`] (socket) or [`Generation`] (credential)
//! it is about, so a message from a dead socket or about a stale token never undoes newer state.

use std::fmt;

macro_rules! counter {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(u64);

        impl $name {
            /// Before the first one.
            pub const NONE: Self = Self(0);

            /// Wraps a raw number (status, metrics and tests).
            pub const fn new(n: u64) -> Self {
                Self(n)
            }

            /// The one after this.
            pub fn next(self) -> Self {
                Self(self.0.saturating_add(1))
            }

            /// The raw number.
            pub fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

counter!(
    /// One generation of credentials; monotonic per stream. A rejection names the generation it
    /// rejected, and only a rejection of the current one refreshes.
    Generation
);

counter!(
    /// One socket; monotonic per stream. Frames and reports name the socket they belong to.
    Epoch
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_start_at_none_and_only_grow() {
        assert_eq!(Generation::NONE.next(), Generation::new(1));
        assert!(Epoch::new(2) > Epoch::new(1));
        assert_eq!(Epoch::new(u64::MAX).next(), Epoch::new(u64::MAX));
    }
}
