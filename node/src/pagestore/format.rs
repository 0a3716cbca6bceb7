//! The page store's slot format, sans-IO.
//!
//! Each segment gets one sparse file. Every page of the PG has two fixed slots, A and B; a
//! slot is a 4 KiB header sector followed by the 8 KiB page. Pages are grouped in extents
//! of [`EXTENT_PAGES`]: an extent holds slot A of its pages side by side, then slot B, so
//! new versions of neighbouring pages that go to the same slot form one contiguous run and
//! are written with one `O_DIRECT` write:
//!
//! ```text
//!  i = page − first page of the PG, e = i / 16, j = i % 16, s = 0 (A) or 1 (B)
//!  offset ((2·e + s) · 16 + j) · 12 KiB
//!  ┌──────── header sector (4 KiB, 48 bytes used) ────────┬──── page (8 KiB) ────┐
//!  │magic "HXPV"│ver│ - │volume│pg│ - │page│page_lsn│data crc│header crc│ zeros…│ page bytes           │
//!  │ 0..4       │4..6│6..8│8..16│16..20│20..24│24..32│32..40│40..44│44..48     │                      │
//!  └───────────────────────────────────────────────────────┴──────────────────────┘
//! ```
//!
//! A slot is **valid** when its header CRC, magic, version and identity (volume, PG, page)
//! match and the page bytes match the data CRC. An all-zero header (a hole in the sparse
//! file) is **empty**. Anything else is **corrupt**: a torn write or bad media.
//!
//! A new version of a page always goes to the slot that does *not* hold the page's newest
//! valid version ([`next_slot`]), so it never overwrites the version it replaces: a crash
//! mid-write tears at most the slot being written, which fails its CRC, and the other slot
//! still holds the previous version. The coalescer writes a version only up to
//! `min(SCL, PGMRPL)`, so the version it overwrites (older than the newest, which is
//! ≤ PGMRPL) is one no reader at or above PGMRPL needs.

use hexad_client::{Lsn, PageNo, PgIndex, VolumeId, PAGE_BYTES};

/// Bytes of a slot's header sector.
pub const HEADER_BYTES: usize = 4096;
/// Bytes of one slot: header sector and page.
pub const SLOT_BYTES: usize = HEADER_BYTES + PAGE_BYTES;
/// Slots per page.
pub const SLOTS: usize = 2;
const MAGIC: &[u8; 4] = b"HXPV";
/// Version 2: extents (version 1 kept both slots of a page side by side).
const VERSION: u16 = 2;
/// Pages per extent (see the module comment).
pub const EXTENT_PAGES: u64 = 16;
/// Bytes of one extent: slot A of its pages, then slot B.
pub const EXTENT_BYTES: usize = SLOTS * EXTENT_PAGES as usize * SLOT_BYTES;

/// Where slot `s` of the `j`-th page of an extent starts within the extent.
pub fn slot_in_extent(j: u64, s: usize) -> usize {
    (s * EXTENT_PAGES as usize + j as usize) * SLOT_BYTES
}

/// Bytes of the header that carry fields (the rest of the sector is zero).
const HEADER_USED: usize = 48;

/// What one slot holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    /// Never written.
    Empty,
    /// A whole version of the page as of `page_lsn`.
    Valid { page_lsn: Lsn },
    /// Written but unreadable: the reason.
    Corrupt(String),
}

/// Where slot `s` of `page` (a page of `pg`) starts in the segment's file.
pub fn slot_offset(pg: PgIndex, page: PageNo, s: usize) -> u64 {
    assert!(
        pg.contains(page) && s < SLOTS,
        "page {page} slot {s} of pg {pg}"
    );
    let index = page.0 - pg.first_page().0;
    let (extent, within) = (index / EXTENT_PAGES, index % EXTENT_PAGES);
    ((extent * SLOTS as u64 + s as u64) * EXTENT_PAGES + within) * SLOT_BYTES as u64
}

/// The bytes of a slot holding `data` as page `page` of `(volume, pg)` at `page_lsn`.
pub fn encode(
    volume: VolumeId,
    pg: PgIndex,
    page: PageNo,
    page_lsn: Lsn,
    data: &[u8; PAGE_BYTES],
) -> Vec<u8> {
    let mut slot = vec![0u8; SLOT_BYTES];
    let h = &mut slot[..HEADER_USED];
    h[0..4].copy_from_slice(MAGIC);
    h[4..6].copy_from_slice(&VERSION.to_le_bytes());
    h[8..16].copy_from_slice(&volume.0.to_le_bytes());
    h[16..20].copy_from_slice(&pg.0.to_le_bytes());
    h[24..32].copy_from_slice(&page.0.to_le_bytes());
    h[32..40].copy_from_slice(&page_lsn.0.to_le_bytes());
    h[40..44].copy_from_slice(&crc32c::crc32c(data).to_le_bytes());
    let header_crc = crc32c::crc32c(&h[..44]);
    h[44..48].copy_from_slice(&header_crc.to_le_bytes());
    slot[HEADER_BYTES..].copy_from_slice(data);
    slot
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// Reads a slot's bytes (`SLOT_BYTES` of them) as page `page` of `(volume, pg)`.
pub fn decode(volume: VolumeId, pg: PgIndex, page: PageNo, slot: &[u8]) -> Slot {
    assert_eq!(slot.len(), SLOT_BYTES, "a whole slot");
    let h = &slot[..HEADER_BYTES];
    if h.iter().all(|b| *b == 0) {
        return Slot::Empty;
    }
    if u32_at(h, 44) != crc32c::crc32c(&h[..44]) {
        return Slot::Corrupt("header CRC mismatch".into());
    }
    if &h[0..4] != MAGIC || u16::from_le_bytes([h[4], h[5]]) != VERSION {
        return Slot::Corrupt(format!("not a version-{VERSION} page slot"));
    }
    let (v, p, n) = (u64_at(h, 8), u32_at(h, 16), u64_at(h, 24));
    if (v, p, n) != (volume.0, pg.0, page.0) {
        return Slot::Corrupt(format!(
            "holds volume {v} pg {p} page {n}, expected volume {} pg {} page {}",
            volume.0, pg.0, page.0
        ));
    }
    if u32_at(h, 40) != crc32c::crc32c(&slot[HEADER_BYTES..]) {
        return Slot::Corrupt("page data CRC mismatch".into());
    }
    Slot::Valid {
        page_lsn: Lsn(u64_at(h, 32)),
    }
}

/// The page LSN a slot's header claims, when the header itself checks out (its CRC, magic,
/// version and identity) whatever the page bytes hold: for a slot whose data is corrupt,
/// which version it was.
pub fn header_lsn(volume: VolumeId, pg: PgIndex, page: PageNo, slot: &[u8]) -> Option<Lsn> {
    let h = &slot[..HEADER_BYTES];
    let intact = u32_at(h, 44) == crc32c::crc32c(&h[..44])
        && &h[0..4] == MAGIC
        && u16::from_le_bytes([h[4], h[5]]) == VERSION
        && (u64_at(h, 8), u32_at(h, 16), u64_at(h, 24)) == (volume.0, pg.0, page.0);
    intact.then(|| Lsn(u64_at(h, 32)))
}

/// The page's bytes in a slot [`decode`] found valid.
pub fn data(slot: &[u8]) -> &[u8] {
    &slot[HEADER_BYTES..SLOT_BYTES]
}

/// The slot holding the newest valid version, if any.
pub fn newest(slots: &[Slot; SLOTS]) -> Option<(usize, Lsn)> {
    slots
        .iter()
        .enumerate()
        .filter_map(|(s, slot)| match slot {
            Slot::Valid { page_lsn } => Some((s, *page_lsn)),
            _ => None,
        })
        .max_by_key(|(_, lsn)| *lsn)
}

/// Where the next version goes: the slot that does not hold the newest valid version
/// (with none valid, slot A).
pub fn next_slot(slots: &[Slot; SLOTS]) -> usize {
    newest(slots).map_or(0, |(s, _)| 1 - s)
}

/// The version a read at `read_lsn` starts from: the newest valid one at or below it
/// (records above it up to `read_lsn` are then applied), or `None` to start from zeros.
pub fn base_for(slots: &[Slot; SLOTS], read_lsn: Lsn) -> Option<(usize, Lsn)> {
    slots
        .iter()
        .enumerate()
        .filter_map(|(s, slot)| match slot {
            Slot::Valid { page_lsn } if *page_lsn <= read_lsn => Some((s, *page_lsn)),
            _ => None,
        })
        .max_by_key(|(_, lsn)| *lsn)
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: VolumeId = VolumeId(7);
    const PG: PgIndex = PgIndex(3);

    fn page(i: u64) -> PageNo {
        PageNo(PG.first_page().0 + i)
    }

    fn image(fill: u8) -> [u8; PAGE_BYTES] {
        [fill; PAGE_BYTES]
    }

    #[test]
    fn neighbours_share_a_run_per_slot_and_no_slots_overlap() {
        let slot = SLOT_BYTES as u64;
        let e = EXTENT_PAGES;
        assert_eq!(slot_offset(PG, page(0), 0), 0);
        assert_eq!(slot_offset(PG, page(1), 0), slot);
        assert_eq!(slot_offset(PG, page(e - 1), 0), (e - 1) * slot);
        assert_eq!(slot_offset(PG, page(0), 1), e * slot);
        assert_eq!(slot_offset(PG, page(e), 0), 2 * e * slot);
        let mut seen = std::collections::HashSet::new();
        for i in 0..5 * e {
            for s in 0..SLOTS {
                let at = slot_offset(PG, page(i), s);
                // Every slot is 4 KiB aligned, for O_DIRECT, and has its own place.
                assert_eq!(at % 4096, 0);
                assert!(seen.insert(at), "page {i} slot {s} overlaps another");
            }
        }
        assert!(seen.iter().all(|at| *at < 5 * e * 2 * slot));
    }

    #[test]
    fn a_version_round_trips_and_names_its_page() {
        let slot = encode(V, PG, page(5), Lsn(42), &image(9));
        assert_eq!(
            decode(V, PG, page(5), &slot),
            Slot::Valid { page_lsn: Lsn(42) }
        );
        assert_eq!(data(&slot), &image(9)[..]);
        // The same bytes read as another page (a misdirected write) are not that page.
        assert!(matches!(decode(V, PG, page(6), &slot), Slot::Corrupt(_)));
        assert!(matches!(
            decode(VolumeId(8), PG, page(5), &slot),
            Slot::Corrupt(_)
        ));
        assert_eq!(decode(V, PG, page(5), &vec![0; SLOT_BYTES]), Slot::Empty);
    }

    #[test]
    fn any_flipped_byte_is_corruption() {
        let good = encode(V, PG, page(1), Lsn(10), &image(3));
        for at in [
            0,
            9,
            33,
            41,
            45,
            HEADER_BYTES,
            HEADER_BYTES + 4000,
            SLOT_BYTES - 1,
        ] {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            assert!(
                matches!(decode(V, PG, page(1), &bad), Slot::Corrupt(_)),
                "byte {at}"
            );
        }
        // A write torn after the header: the header is new, the page still the old one.
        let mut torn = encode(V, PG, page(1), Lsn(11), &image(4));
        torn[HEADER_BYTES + 4096..].copy_from_slice(&good[HEADER_BYTES + 4096..]);
        assert_eq!(
            decode(V, PG, page(1), &torn),
            Slot::Corrupt("page data CRC mismatch".into())
        );
        // Its header still says which version it was; a damaged header says nothing.
        assert_eq!(header_lsn(V, PG, page(1), &torn), Some(Lsn(11)));
        let mut bad_header = torn.clone();
        bad_header[33] ^= 1;
        assert_eq!(header_lsn(V, PG, page(1), &bad_header), None);
    }

    #[test]
    fn a_new_version_never_overwrites_the_newest_valid_one() {
        let valid = |l| Slot::Valid { page_lsn: Lsn(l) };
        assert_eq!(next_slot(&[Slot::Empty, Slot::Empty]), 0);
        assert_eq!(next_slot(&[valid(5), Slot::Empty]), 1);
        assert_eq!(next_slot(&[valid(5), valid(9)]), 0);
        assert_eq!(next_slot(&[valid(9), valid(5)]), 1);
        // A torn slot beside a valid one is the one to rewrite, whichever it is.
        assert_eq!(next_slot(&[Slot::Corrupt("torn".into()), valid(5)]), 0);
        assert_eq!(next_slot(&[valid(5), Slot::Corrupt("torn".into())]), 1);
    }

    #[test]
    fn a_read_starts_from_the_newest_version_at_or_below_its_lsn() {
        let slots = [
            Slot::Valid { page_lsn: Lsn(20) },
            Slot::Valid { page_lsn: Lsn(10) },
        ];
        assert_eq!(base_for(&slots, Lsn(25)), Some((0, Lsn(20))));
        assert_eq!(base_for(&slots, Lsn(20)), Some((0, Lsn(20))));
        assert_eq!(base_for(&slots, Lsn(15)), Some((1, Lsn(10))));
        assert_eq!(base_for(&slots, Lsn(5)), None);
        let torn = [
            Slot::Corrupt("torn".into()),
            Slot::Valid { page_lsn: Lsn(10) },
        ];
        assert_eq!(base_for(&torn, Lsn(25)), Some((1, Lsn(10))));
    }
}
