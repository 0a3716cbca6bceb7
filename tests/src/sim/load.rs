//! The workload a simulated writer runs, the reference of what it was told, and the
//! checks of what a new writer reads against it.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use hexad_client::volume::{Change, Volume};
use hexad_client::wire::Op;
use hexad_client::{Lsn, PageNo, PG_PAGES};
use hexad_node::disk::sim::Rng;

use super::{cluster_map, volume_config, COMMITS_PER_PAGE, IN_FLIGHT, PAGES_PER_PG};

/// What became of one commit.
#[derive(Debug, Clone)]
pub(super) struct Commit {
    pub(super) bit: u64,
    pub(super) bytes: [u8; 32],
    pub(super) lsn: Option<Lsn>,
    pub(super) acked: bool,
}

#[derive(Default)]
pub(super) struct Reference {
    /// Page → its commits in issue order.
    pub(super) pages: BTreeMap<u64, Vec<Commit>>,
}

pub(super) fn page_no(i: u64) -> PageNo {
    let (pg, within) = (i % 2, (i / 2) % PAGES_PER_PG);
    PageNo(pg * PG_PAGES + within)
}

pub(super) fn changes(page: PageNo, bit: u64, bytes: &[u8; 32]) -> Vec<Change> {
    let mut add = Vec::with_capacity(12);
    add.extend_from_slice(&0u32.to_le_bytes());
    add.extend_from_slice(&(1u64 << bit).to_le_bytes());
    let mut write = Vec::with_capacity(36);
    write.extend_from_slice(&16u32.to_le_bytes());
    write.extend_from_slice(bytes);
    vec![
        Change {
            page,
            op: Op::AddU64,
            payload: Bytes::from(add),
        },
        Change {
            page,
            op: Op::WriteBytes,
            payload: Bytes::from(write),
        },
    ]
}

/// Commits until every page has had its share, with `IN_FLIGHT` at once, while `faults`
/// runs; records each commit's outcome.
pub(super) async fn workload(
    vol: Rc<Volume>,
    reference: Rc<RefCell<Reference>>,
    seed: u64,
    vdl_ok: Rc<Cell<bool>>,
    second: Option<SecondOpen>,
) {
    let next = Rc::new(Cell::new(0u64));
    let total = 2 * PAGES_PER_PG * COMMITS_PER_PAGE;
    let mut workers = Vec::new();
    for w in 0..IN_FLIGHT {
        let (vol, reference, next, vdl_ok, second) = (
            vol.clone(),
            reference.clone(),
            next.clone(),
            vdl_ok.clone(),
            second.clone(),
        );
        workers.push(glommio::spawn_local(async move {
            let mut rng = Rng::new(seed * 1000 + w as u64);
            let mut last_vdl = Lsn::NONE;
            loop {
                // Commits spread over the faults: a pause of up to 4 ms before each.
                let pause = rng.below(5);
                if pause > 0 {
                    glommio::timer::sleep(Duration::from_millis(pause)).await;
                }
                let i = next.get();
                if i >= total {
                    return;
                }
                next.set(i + 1);
                let (page, bit) = match &second {
                    Some(open) => {
                        if i == total / 2 - IN_FLIGHT as u64 {
                            open.start();
                        }
                        // The second half goes to a PG nobody wrote before.
                        if i >= total / 2 {
                            let j = i - total / 2;
                            (
                                PageNo(FRESH_PG * PG_PAGES + j % PAGES_PER_PG),
                                j / PAGES_PER_PG,
                            )
                        } else {
                            (page_no(i), i / (2 * PAGES_PER_PG))
                        }
                    }
                    None => (page_no(i), i / (2 * PAGES_PER_PG)),
                };
                let mut bytes = [0u8; 32];
                for b in &mut bytes {
                    *b = rng.below(256) as u8;
                }
                let slot = {
                    let mut r = reference.borrow_mut();
                    let list = r.pages.entry(page.0).or_default();
                    list.push(Commit {
                        bit,
                        bytes,
                        lsn: None,
                        acked: false,
                    });
                    list.len() - 1
                };
                let outcome = match vol.append(&changes(page, bit, &bytes)).await {
                    Ok(lsn) => {
                        reference.borrow_mut().pages.get_mut(&page.0).expect("page")[slot].lsn =
                            Some(lsn);
                        vol.wait_durable(lsn).await.map(|()| lsn)
                    }
                    Err(e) => Err(e),
                };
                let vdl = vol.vdl();
                if vdl < last_vdl {
                    vdl_ok.set(false);
                }
                last_vdl = vdl;
                match outcome {
                    Ok(_) => {
                        reference.borrow_mut().pages.get_mut(&page.0).expect("page")[slot].acked =
                            true;
                    }
                    // In doubt: it may or may not be in the volume. The checker accepts both.
                    Err(_) => glommio::timer::sleep(Duration::from_millis(20)).await,
                }
            }
        }));
    }
    for w in workers {
        w.await;
    }
}

/// The PG a concurrent-open run starts writing halfway (never written before).
pub(super) const FRESH_PG: u64 = 2;

/// A second writer's open, started from inside the workload.
#[derive(Clone, Default)]
pub(super) struct SecondOpen(Rc<RefCell<Option<OpenTask>>>);

pub(super) type OpenTask = glommio::Task<Result<Volume, String>>;

impl SecondOpen {
    pub(super) fn start(&self) {
        let task = glommio::spawn_local(async {
            Volume::open(cluster_map(), volume_config())
                .await
                .map_err(|e| format!("the second open failed: {e}"))
        });
        *self.0.borrow_mut() = Some(task);
    }

    pub(super) async fn finish(&self) -> Result<Volume, String> {
        let task = self
            .0
            .borrow_mut()
            .take()
            .ok_or("the second open never started")?;
        task.await
    }
}

/// Checks one page as read by a new writer against what the old one was told.
pub(super) fn check_page(page: u64, data: &[u8], commits: &[Commit]) -> Result<(), String> {
    let counter = u64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
    let mut acked = 0u64;
    let mut possible = 0u64;
    for c in commits {
        possible |= 1 << c.bit;
        if c.acked {
            acked |= 1 << c.bit;
        }
    }
    if counter & acked != acked {
        return Err(format!(
            "page {page}: acknowledged commits missing: counter {counter:#x}, acknowledged {acked:#x} (missing {:#x})",
            acked & !counter
        ));
    }
    if counter & !possible != 0 {
        return Err(format!(
            "page {page}: counter {counter:#x} holds bits no commit set ({:#x}): a record applied twice or invented",
            counter & !possible
        ));
    }
    // The page's bytes are those of its newest applied commit (the highest LSN; commits
    // without a known LSN never got one, so were never sent).
    let newest = commits
        .iter()
        .filter(|c| counter & (1 << c.bit) != 0)
        .filter_map(|c| c.lsn.map(|l| (l, c)))
        .max_by_key(|(l, _)| *l);
    let bytes = &data[16..48];
    match newest {
        Some((lsn, c)) if bytes != c.bytes => Err(format!(
            "page {page}: bytes are not those of its newest applied commit (bit {}, LSN {lsn})",
            c.bit
        )),
        None if counter != 0 => Err(format!(
            "page {page}: applied commits {counter:#x} that were never sent"
        )),
        _ => Ok(()),
    }
}
