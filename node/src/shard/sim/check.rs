//! The checker of a shard session: after every step, what the shard holds and answers
//! against what it acknowledged (see the parent module's comment).

use bytes::Bytes;
use hexad_client::wire::{ErrorCode, Message, Record};
use hexad_client::{Lsn, PageNo, PAGE_BYTES};

use std::collections::BTreeMap;

use super::{describe, page_of, Session, KEY, MAX_STEPS, PAGES, PG, VOLUME};

impl Session {
    /// The promises about held records and pages (see the module comment).
    pub(super) async fn check(&mut self, when: &str) -> Result<(), String> {
        self.check_records(when).await?;
        self.check_pages(when).await
    }

    /// Every acknowledged record not annulled since is held with its bytes or is at or
    /// below the floor, and the highest LSN covers them all.
    pub(super) async fn check_records(&mut self, when: &str) -> Result<(), String> {
        if self.lawless {
            return Ok(());
        }
        let Some((_, floor, highest)) = self.segment() else {
            return match self.acked.keys().next_back() {
                Some(lsn) => Err(format!("{when}: acknowledged LSN {lsn}, but no segment")),
                None => Ok(()),
            };
        };
        if let Some(lsn) = self.acked.keys().next_back() {
            if highest < *lsn {
                return Err(format!(
                    "{when}: the segment's highest LSN {highest} is below the acknowledged {lsn} (floor {floor})"
                ));
            }
        }
        let held = self.fetch_above(floor, when).await?;
        for (lsn, (epoch, bytes)) in self.acked.range(Lsn(floor.0 + 1)..) {
            match held.get(lsn) {
                None => {
                    return Err(format!(
                        "{when}: acknowledged LSN {lsn} (epoch {epoch}) is not held (floor {floor})"
                    ))
                }
                Some(b) if b != bytes => {
                    return Err(format!(
                        "{when}: LSN {lsn} is held with other bytes than acknowledged"
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Each page read at the SCL equals the reference page.
    async fn check_pages(&mut self, when: &str) -> Result<(), String> {
        let Some((scl, floor, _)) = self.segment().filter(|_| !self.lawless) else {
            return Ok(());
        };
        if scl < self.node_pgmrpl() {
            return Ok(());
        }
        for page in 0..PAGES {
            let reply = self
                .shard
                .handle(Message::GetPage {
                    volume: VOLUME,
                    pg: PG,
                    page: PageNo(page),
                    read_lsn: scl,
                    complete_lsn: scl,
                    page_head: Lsn::NONE,
                })
                .await
                .message;
            let data = match reply {
                Message::Page { data, .. } => data,
                // Below the writer's PGMRPL (which a restarted node has not heard yet) a
                // page whose newer version swallowed the records may refuse the read.
                Message::Error {
                    code: ErrorCode::TooOld,
                    ..
                } if scl < self.pgmrpl => continue,
                _ => {
                    return Err(format!(
                        "{when}: page {page} at the SCL {scl} answered {}",
                        describe(&reply)
                    ))
                }
            };
            let expected = self.reference_page(PageNo(page), scl)?;
            if data[..] != expected[..] {
                let model: Vec<u64> = self
                    .acked
                    .range(..=scl)
                    .filter(|(_, (_, raw))| page_of(raw) == Some(PageNo(page)))
                    .map(|(l, _)| l.0)
                    .collect();
                let held: Vec<u64> =
                    self.shard
                        .segments
                        .borrow()
                        .get(&KEY)
                        .map_or_else(Vec::new, |s| {
                            s.page_records(PageNo(page), Lsn::NONE, scl)
                                .iter()
                                .map(|m| m.lsn.0)
                                .collect()
                        });
                let stored = match self.shard.pages.as_ref() {
                    Some(store) => match store.read(KEY, PageNo(page)).await {
                        Ok(slots) => format!("{:?}", slots.slots),
                        Err(e) => e.to_string(),
                    },
                    None => "no page store".into(),
                };
                return Err(format!(
                    "{when}: page {page} read at the SCL {scl} (floor {floor}) differs from the reference \
                     (acknowledged records of the page: {model:?}; held in memory: {held:?}; \
                     stored slots: {stored}; read {:?}, expected {:?})",
                    &data[..48],
                    &expected[..48]
                ));
            }
            self.stats.pages_checked += 1;
        }
        Ok(())
    }

    /// The PGMRPL the shard holds now (reads below it are refused as too old).
    fn node_pgmrpl(&self) -> Lsn {
        self.shard
            .progress
            .borrow()
            .get(&VOLUME)
            .map_or(Lsn::NONE, |p| p.pgmrpl)
    }

    /// Every acknowledged record of `page` up to `upto`, applied in LSN order.
    fn reference_page(&self, page: PageNo, upto: Lsn) -> Result<[u8; PAGE_BYTES], String> {
        let mut out = [0u8; PAGE_BYTES];
        for (_, raw) in self.acked.range(..=upto).map(|(_, v)| v) {
            let mut r = hexad_client::wire::codec::Reader::new(raw.clone(), "record");
            let record = Record::decode(&mut r).map_err(|e| format!("an acked record: {e}"))?;
            if record.page == page {
                record.apply_to(&mut out);
            }
        }
        Ok(out)
    }

    /// The records the segment holds above `after`, by LSN.
    pub(super) async fn fetch_above(
        &mut self,
        after: Lsn,
        when: &str,
    ) -> Result<BTreeMap<Lsn, Bytes>, String> {
        let mut held = BTreeMap::new();
        let mut after = after;
        for _ in 0..=MAX_STEPS * 4 {
            let reply = self
                .shard
                .handle(Message::FetchRecords {
                    volume: VOLUME,
                    pg: PG,
                    after_lsn: after,
                    to_lsn: Lsn(u64::MAX),
                    max_bytes: 64 * 1024,
                })
                .await
                .message;
            let (records, more) = match reply {
                Message::Records { records, more, .. } => (records, more),
                other => {
                    return Err(format!(
                        "{when}: FetchRecords answered {}",
                        describe(&other)
                    ))
                }
            };
            for r in &records {
                held.insert(r.lsn, r.raw().clone());
            }
            match records.last() {
                Some(last) if more => after = last.lsn,
                _ => break,
            }
        }
        Ok(held)
    }
}
