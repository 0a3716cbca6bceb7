//! Hot-log recovery: find the log among whatever the files hold after a crash.
//!
//! The scan is sans-IO: the shell reads each file and feeds it to [`Scanner::scan_file`];
//! [`Scanner::finish`] returns the log in order, where to continue writing, and any
//! corruption found.
//!
//! ## Rules
//! 1. A *candidate* is any block at a 4 KiB boundary whose header and CRC check out.
//! 2. The log is the chain of candidates with consecutive `seq`, starting at the highest
//!    `log_start_seq` any candidate carries (blocks below it were released). At each seq the
//!    candidate with the highest `generation` is taken, and generations never decrease along
//!    the chain. The writer takes a new generation whenever it starts a file and after every
//!    restart, so a leftover from before a crash (a stale or torn-window block) can never
//!    extend a later incarnation's chain.
//! 3. The chain ends at the first seq N with no candidate. If some later candidate (of a
//!    generation the chain could still take) says `durable_seq >= N`, block N *was* durable
//!    and is now unreadable: that is **corruption**, reported with its location, and the walk
//!    resumes at the next seq that has a candidate. Otherwise N is the **torn tail**: it
//!    was never durable, so nothing in it was acknowledged (acks wait for every earlier block),
//!    and the log ends there.

use std::collections::BTreeMap;

use super::format::{parse_block, BlockHeader, RecordLoc, ScannedEntry, BLOCK_ALIGN};

/// A valid block found in a file.
#[derive(Debug)]
struct Candidate {
    file: u32,
    offset: u64,
    header: BlockHeader,
    entries: Vec<ScannedEntry>,
}

/// A recovered record with its location.
#[derive(Debug, Clone)]
pub struct RecoveredEntry {
    pub entry: ScannedEntry,
    pub loc: RecordLoc,
}

/// Blocks that were durable once and are unreadable now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    /// Sequence numbers of the lost blocks, inclusive.
    pub first_seq: u64,
    pub last_seq: u64,
    /// Where the chain broke: the end of the last good block before the loss.
    pub after_file: Option<u32>,
    pub after_offset: u64,
}

/// Where the writer continues after recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tail {
    /// Position after the last block of the log, or `None` when the log is empty.
    pub position: Option<(u32, u64)>,
    /// The seq the next block takes.
    pub next_seq: u64,
    /// Generation for the next block: above every generation found.
    pub next_generation: u64,
    pub log_start_seq: u64,
}

#[derive(Debug)]
pub struct Recovery {
    /// Live records in log order.
    pub entries: Vec<RecoveredEntry>,
    pub tail: Tail,
    pub corruption: Vec<Corruption>,
    /// Per file, the highest seq of a live block in it (0 when none).
    pub file_max_seq: Vec<u64>,
    pub blocks: u64,
}

pub struct Scanner {
    candidates: BTreeMap<u64, Vec<Candidate>>,
    files: usize,
    max_generation: u64,
}

impl Scanner {
    pub fn new(files: usize) -> Self {
        Scanner {
            candidates: BTreeMap::new(),
            files,
            max_generation: 0,
        }
    }

    /// Finds every candidate block in one file's contents.
    pub fn scan_file(&mut self, file: u32, data: &[u8]) {
        let mut at = 0usize;
        while at + BLOCK_ALIGN <= data.len() {
            match parse_block(&data[at..]) {
                Some((header, entries)) => {
                    self.max_generation = self.max_generation.max(header.generation);
                    let span = header.span_bytes();
                    self.candidates
                        .entry(header.seq)
                        .or_default()
                        .push(Candidate {
                            file,
                            offset: at as u64,
                            header,
                            entries,
                        });
                    at += span;
                }
                None => at += BLOCK_ALIGN,
            }
        }
    }

    pub fn finish(mut self) -> Recovery {
        let start = self
            .candidates
            .values()
            .flatten()
            .map(|c| c.header.log_start_seq)
            .max()
            .unwrap_or(1)
            .max(1);
        let mut entries = Vec::new();
        let mut corruption = Vec::new();
        let mut file_max_seq = vec![0u64; self.files];
        let mut position = None;
        let mut generation = 0u64;
        let mut seq = start;
        let mut blocks = 0u64;
        loop {
            let pick = self.candidates.get_mut(&seq).and_then(|cands| {
                let best = cands
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.header.generation >= generation)
                    .max_by_key(|(_, c)| c.header.generation)
                    .map(|(i, _)| i)?;
                Some(cands.swap_remove(best))
            });
            if let Some(c) = pick {
                generation = c.header.generation;
                blocks += 1;
                file_max_seq[c.file as usize] = seq;
                position = Some((c.file, c.offset + c.header.span_bytes() as u64));
                for e in c.entries {
                    let loc = RecordLoc {
                        file: c.file,
                        offset: c.offset + e.record_offset as u64,
                        bytes: e.record.encoded_len() as u32,
                    };
                    entries.push(RecoveredEntry { entry: e, loc });
                }
                seq += 1;
                continue;
            }
            // The chain ends at `seq`: torn tail or corruption?
            let witness = self
                .candidates
                .range(seq + 1..)
                .flat_map(|(_, cands)| cands)
                .any(|c| c.header.generation >= generation && c.header.durable_seq >= seq);
            if !witness {
                break;
            }
            let resume = self
                .candidates
                .range(seq + 1..)
                .find(|(_, cands)| cands.iter().any(|c| c.header.generation >= generation))
                .map(|(s, _)| *s)
                .expect("a witness block exists past the gap");
            corruption.push(Corruption {
                first_seq: seq,
                last_seq: resume - 1,
                after_file: position.map(|(f, _)| f),
                after_offset: position.map_or(0, |(_, o)| o),
            });
            seq = resume;
        }
        Recovery {
            entries,
            tail: Tail {
                position,
                next_seq: seq,
                next_generation: self.max_generation + 1,
                log_start_seq: start,
            },
            corruption,
            file_max_seq,
            blocks,
        }
    }
}
