//! Newtypes for every identity and unit that crosses a wire or a disk.

use std::fmt;

macro_rules! newtype {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        #[derive(serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

newtype!(
    /// Log sequence number, allocated by the single writer of a volume. `Lsn(0)` means "none".
    Lsn(u64)
);
newtype!(
    /// A logical database volume.
    VolumeId(u64)
);
newtype!(
    /// Index of a protection group inside a volume: pages `[k*S, (k+1)*S)`.
    PgIndex(u32)
);
newtype!(
    /// A storage node, as named in the cluster configuration.
    NodeId(u32)
);
newtype!(
    /// An 8 KiB page of a volume.
    PageNo(u64)
);
newtype!(
    /// One core of a node.
    ShardId(u16)
);
newtype!(
    /// Bumped at every volume open; fences older writers.
    VolumeEpoch(u64)
);
newtype!(
    /// Bumped per PG at every membership change.
    MembershipEpoch(u64)
);

/// Bytes in a page.
pub const PAGE_BYTES: usize = 8192;
/// Read-only attachments a volume allows besides its writer (DESIGN §6).
pub const MAX_READERS: usize = 15;
/// Pages in a protection group: 10 GiB / 8 KiB.
pub const PG_PAGES: u64 = 10 * 1024 * 1024 * 1024 / PAGE_BYTES as u64;
/// Protection groups in the largest volume (128 TiB).
pub const MAX_PGS: u32 = 13_108;

impl Lsn {
    pub const NONE: Lsn = Lsn(0);
}

impl PageNo {
    /// The protection group that holds this page.
    pub fn pg(self) -> PgIndex {
        PgIndex((self.0 / PG_PAGES) as u32)
    }
}

impl PgIndex {
    /// Whether `page` lies inside this protection group.
    pub fn contains(self, page: PageNo) -> bool {
        page.0 / PG_PAGES == u64::from(self.0)
    }

    /// The first page of this protection group.
    pub fn first_page(self) -> PageNo {
        PageNo(u64::from(self.0) * PG_PAGES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_bounds() {
        assert_eq!(PG_PAGES, 1_310_720);
        assert_eq!(PageNo(PG_PAGES - 1).pg(), PgIndex(0));
        assert_eq!(PageNo(PG_PAGES).pg(), PgIndex(1));
        assert!(PgIndex(1).contains(PgIndex(1).first_page()));
        assert!(!PgIndex(1).contains(PageNo(PG_PAGES - 1)));
    }
}
