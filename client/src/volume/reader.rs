//! Read-only attachments (DESIGN §6): [`VolumeReader`], and the reader slots that keep a
//! volume at [`MAX_READERS`] readers besides its writer.
//!
//! A reader claims one of the volume's slots on every segment of PG 0 (`ClaimReaderSlot`)
//! and holds it once 4 of the 6 granted it: any two sets of 4 among 6 share a node, and a
//! node grants a slot to one reader at a time, so two readers never hold one slot. A grant
//! is a lease (30 s on the node); a background task renews it every third of that, and
//! gives the slot back when the reader is dropped. When fewer than 4 of PG 0's nodes
//! answer at all (an AZ and one more node down), the count cannot be checked: the reader
//! attaches anyway, unregistered, since reads then need only 3, and registers at a later
//! renewal. A reader that loses its slot (its renewals failed past the lease and another
//! reader took it) and finds no free one is detached: its calls fail with
//! [`VolumeError::TooManyReaders`].

use std::cell::{Cell, RefCell};
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::time::Duration;

use bytes::Bytes;

use super::read::{self, Asked, PageRead};
use super::recovery::{self, Recovered};
use super::{rpc, VolumeConfig, VolumeError};
use crate::placement::{segment_shard, ClusterMap};
use crate::types::{Lsn, NodeId, PageNo, PgIndex, MAX_PGS, MAX_READERS};
use crate::wire::{Message, Record};

/// Grants a reader needs for a slot: a write quorum of PG 0, so two claims always meet.
const SLOT_QUORUM: usize = 4;
/// Rounds over every slot before a reader gives up (two readers racing for one slot may
/// both fall short and move on).
const CLAIM_ROUNDS: usize = 3;

/// A read-only attachment to a volume, made by [`super::Volume::attach_reader`]. Opening
/// needs only a read quorum (3 of 6) of every PG, so it works with an AZ and one more
/// node down; it never writes or fences. The reader starts at the VDL the open recovered
/// and learns newer ones from the nodes ([`VolumeReader::refresh`]), which the writer
/// keeps told. Pages are read from one segment with a hedge, as the writer does.
pub struct VolumeReader {
    cluster: ClusterMap,
    cfg: VolumeConfig,
    recovered: Recovered,
    vdl: Cell<Lsn>,
    pool: Rc<rpc::RpcPool>,
    slot: Rc<SlotClaim>,
}

impl VolumeReader {
    /// Recovers the volume's state from a read quorum of every PG and claims a reader slot
    /// (see the module comment); fails with [`VolumeError::TooManyReaders`] when the volume
    /// has its [`MAX_READERS`] readers.
    pub(super) async fn attach(
        cluster: ClusterMap,
        cfg: VolumeConfig,
    ) -> Result<VolumeReader, VolumeError> {
        let recovered = recovery::Opener::new(&cluster, &cfg, false, None)
            .open()
            .await?;
        let pool = Rc::new(rpc::RpcPool::new(
            cfg.network.clone(),
            cfg.connect_timeout,
            cfg.request_timeout,
        ));
        let shards = |node: NodeId| {
            cluster
                .node(node)
                .and_then(|e| e.shards)
                .unwrap_or(cfg.default_shards)
        };
        let pg0 = PgIndex(0);
        let members = cluster
            .pg_members(cfg.volume, pg0)
            .iter()
            .map(|n| {
                let entry = cluster.node(*n).expect("members come from the cluster map");
                (
                    *n,
                    entry.shard_addr(segment_shard(cfg.volume, pg0, shards(*n))),
                )
            })
            .collect();
        let slot = Rc::new(SlotClaim {
            volume: cfg.volume,
            reader: new_reader_id(),
            members,
            pool: pool.clone(),
            held: Cell::new(None),
            detached: RefCell::new(None),
        });
        slot.claim_any().await?;
        SlotClaim::keep_renewed(Rc::downgrade(&slot));
        Ok(VolumeReader {
            vdl: Cell::new(recovered.vdl),
            cluster,
            cfg,
            recovered,
            pool,
            slot,
        })
    }

    /// The reader slot this reader holds (`None`: it attached unregistered, see the module
    /// comment), and its id.
    pub fn slot(&self) -> (Option<u32>, u64) {
        (self.slot.held.get(), self.slot.reader)
    }

    /// Gives the reader slot back at once (dropping the reader gives it back too, within a
    /// renewal period).
    pub async fn detach(self) {
        if let Some(slot) = self.slot.held.take() {
            self.slot.ask(slot, true).await;
        }
    }

    /// The nodes of the PG's membership as the open found it (the placement default for a
    /// PG the open did not see).
    fn nodes_of(&self, pg: PgIndex) -> Vec<NodeId> {
        self.recovered.pgs.get(&pg).map_or_else(
            || self.cluster.pg_members(self.cfg.volume, pg).to_vec(),
            |s| s.members.nodes(),
        )
    }

    fn addr(&self, node: NodeId, pg: PgIndex) -> std::net::SocketAddr {
        let entry = self
            .cluster
            .node(node)
            .expect("members come from the cluster map");
        let shards = entry.shards.unwrap_or(self.cfg.default_shards);
        entry.shard_addr(segment_shard(self.cfg.volume, pg, shards))
    }

    /// Asks PG 0's segments for the latest VDL the writer told them, and reads at it from
    /// now on. Returns it. Never moves backwards.
    pub async fn refresh(&self) -> Result<Lsn, VolumeError> {
        self.slot.check()?;
        let pg = PgIndex(0);
        let mut tasks = Vec::new();
        for node in self.nodes_of(pg) {
            let (pool, addr) = (self.pool.clone(), self.addr(node, pg));
            let msg = Message::Fence {
                volume: self.cfg.volume,
                pg,
                epoch: crate::VolumeEpoch(0),
                mode: crate::wire::FenceMode::Look,
            };
            tasks.push(glommio::spawn_local(async move {
                pool.call(node, addr, msg).await
            }));
        }
        let mut answered = 0;
        let mut errors = Vec::new();
        for t in tasks {
            match t.await {
                Ok(Message::FenceOk { view, .. }) => {
                    answered += 1;
                    self.vdl.set(self.vdl.get().max(view.writer_vdl));
                }
                Ok(other) => errors.push(format!("{other:?}")),
                Err(e) => errors.push(e),
            }
        }
        if answered == 0 {
            return Err(VolumeError::ReadFailed {
                pg,
                detail: format!("no segment told the VDL: {}", errors.join("; ")),
            });
        }
        Ok(self.vdl.get())
    }

    /// Reads `page` as of `read_point` (default: the reader's VDL) from one segment, with
    /// a hedge; a page of a PG no segment holds reads as zeros.
    pub async fn read_page(
        &self,
        page: PageNo,
        read_point: Option<Lsn>,
    ) -> Result<PageRead, VolumeError> {
        self.slot.check()?;
        let pg = page.pg();
        if pg.0 >= MAX_PGS {
            return Err(VolumeError::PageOutOfRange(page));
        }
        let read = read_point.unwrap_or(self.vdl.get());
        let mut members: Vec<(Duration, NodeId)> = self
            .nodes_of(pg)
            .iter()
            .map(|n| (self.pool.latency(*n).unwrap_or(Duration::from_secs(1)), *n))
            .collect();
        members.sort();
        let request = Message::GetPage {
            volume: self.cfg.volume,
            pg,
            page,
            read_lsn: read,
            // The reader does not know the PG's records: the node relaxes this with what
            // the writer told it.
            complete_lsn: read,
            page_head: Lsn::NONE,
        };
        let ask = |i: usize| -> Asked {
            let (node, pool, addr, msg) = (
                members[i].1,
                self.pool.clone(),
                self.addr(members[i].1, pg),
                request.clone(),
            );
            (
                node,
                Box::pin(async move { pool.call(node, addr, msg).await.ok() }),
            )
        };
        let first = members[0].0.min(self.cfg.request_timeout);
        read::hedged(members.len(), first, self.cfg.request_timeout, ask)
            .await
            .or_else(|failures| {
                if failures.iter().all(|f| f.contains("NoSuchSegment")) {
                    return Ok(PageRead {
                        page_lsn: Lsn::NONE,
                        data: Bytes::from(vec![0u8; crate::types::PAGE_BYTES]),
                        node: NodeId(0),
                        hedged: false,
                    });
                }
                Err(VolumeError::ReadFailed {
                    pg,
                    detail: format!("page {page} at {read}: {}", failures.join("; ")),
                })
            })
    }

    pub fn recovery(&self) -> &Recovered {
        &self.recovered
    }

    /// The VDL this reader reads at: the open's, or a newer one from [`VolumeReader::refresh`].
    pub fn vdl(&self) -> Lsn {
        self.vdl.get()
    }

    /// The PGs the volume had when the reader attached.
    pub fn pgs(&self) -> Vec<PgIndex> {
        self.recovered.pgs.keys().copied().collect()
    }

    /// The committed records of `pg` in `(after, min(to, VDL)]`, from one segment that is
    /// complete that far (the next one if it fails).
    pub async fn records(
        &self,
        pg: PgIndex,
        after: Lsn,
        to: Lsn,
    ) -> Result<Vec<Record>, VolumeError> {
        let to = to.min(self.recovered.vdl);
        // (`sources` knows the segments' state at open only.)
        let mut errors = Vec::new();
        for node in self.recovered.sources(pg, to) {
            let got = self
                .pool
                .fetch_all(node, self.addr(node, pg), self.cfg.volume, pg, after, to)
                .await;
            match got {
                Ok(records) => return Ok(records),
                Err(e) => errors.push(format!("node {node}: {e}")),
            }
        }
        Err(VolumeError::ReadFailed {
            pg,
            detail: if errors.is_empty() {
                "no segment that answered the open is complete that far".into()
            } else {
                errors.join("; ")
            },
        })
    }
}

/// A reader's claim on one of the volume's slots.
struct SlotClaim {
    volume: crate::VolumeId,
    reader: u64,
    /// PG 0's members and the address of the shard that serves PG 0 on each.
    members: Vec<(NodeId, SocketAddr)>,
    pool: Rc<rpc::RpcPool>,
    held: Cell<Option<u32>>,
    /// Why the reader lost its slot, if it did.
    detached: RefCell<Option<String>>,
}

impl SlotClaim {
    fn check(&self) -> Result<(), VolumeError> {
        match &*self.detached.borrow() {
            Some(why) => Err(VolumeError::TooManyReaders(why.clone())),
            None => Ok(()),
        }
    }

    /// Sends a claim (or release) of `slot` to every member at once; returns how many
    /// granted it to this reader, how many answered, and the lease they granted.
    async fn ask(&self, slot: u32, release: bool) -> (usize, usize, Duration) {
        let tasks: Vec<_> = self
            .members
            .iter()
            .map(|(node, addr)| {
                let (pool, node, addr) = (self.pool.clone(), *node, *addr);
                let msg = Message::ClaimReaderSlot {
                    volume: self.volume,
                    reader: self.reader,
                    slot,
                    release,
                };
                glommio::spawn_local(async move { pool.call(node, addr, msg).await })
            })
            .collect();
        let (mut granted, mut answered, mut lease) = (0, 0, Duration::MAX);
        for t in tasks {
            if let Ok(Message::ReaderSlot {
                holder, lease_ms, ..
            }) = t.await
            {
                answered += 1;
                if holder == self.reader {
                    granted += 1;
                    lease = lease.min(Duration::from_millis(u64::from(lease_ms)));
                }
            }
        }
        (granted, answered, lease)
    }

    /// Claims a free slot, starting at a random one. `Ok` with no slot held when fewer
    /// than [`SLOT_QUORUM`] members answered (the count cannot be checked).
    async fn claim_any(&self) -> Result<(), VolumeError> {
        let start = (self.reader % MAX_READERS as u64) as u32;
        let mut taken = 0;
        for round in 0..CLAIM_ROUNDS {
            taken = 0;
            for k in 0..MAX_READERS as u32 {
                let slot = (start + k) % MAX_READERS as u32;
                let (granted, answered, _) = self.ask(slot, false).await;
                if granted >= SLOT_QUORUM {
                    self.held.set(Some(slot));
                    return Ok(());
                }
                if granted > 0 {
                    self.ask(slot, true).await;
                }
                if answered < SLOT_QUORUM {
                    self.held.set(None);
                    return Ok(());
                }
                taken += 1;
            }
            // Back off a random while before the next round (a racing reader may let go).
            let wait = 10 + (self.reader >> 8).wrapping_add(round as u64) % 40;
            glommio::timer::sleep(Duration::from_millis(wait)).await;
        }
        Err(VolumeError::TooManyReaders(format!(
            "volume {}: all {taken} reader slots are held (at most {MAX_READERS} readers besides the writer)",
            self.volume
        )))
    }

    /// Renews the slot every third of its lease while the reader lives; gives it back once
    /// the reader is dropped.
    fn keep_renewed(claim: Weak<SlotClaim>) {
        glommio::spawn_local(async move {
            let mut every = READER_RENEW;
            loop {
                glommio::timer::sleep(every).await;
                let Some(c) = claim.upgrade() else {
                    return;
                };
                if Rc::strong_count(&c) == 1 {
                    // Only this task holds it: the reader is gone.
                    if let Some(slot) = c.held.take() {
                        c.ask(slot, true).await;
                    }
                    return;
                }
                if let Some(slot) = c.held.get() {
                    let (granted, answered, lease) = c.ask(slot, false).await;
                    if granted >= SLOT_QUORUM {
                        every = (lease / 3).min(READER_RENEW);
                        continue;
                    }
                    if answered < SLOT_QUORUM {
                        continue; // keep it; the count cannot be checked now
                    }
                    if granted > 0 {
                        c.ask(slot, true).await;
                    }
                }
                if let Err(e) = c.claim_any().await {
                    *c.detached.borrow_mut() = Some(e.to_string());
                    return;
                }
            }
        })
        .detach();
    }
}

/// How often a held slot is renewed (a third of the node's 30 s lease, or less if the node
/// says its lease is shorter).
const READER_RENEW: Duration = Duration::from_secs(10);

/// A random non-zero reader id.
fn new_reader_id() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish().max(1)
}
