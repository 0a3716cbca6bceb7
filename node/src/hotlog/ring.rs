//! Where the next block goes, and which blocks are durable: the hot log's writer state,
//! sans-IO.
//!
//! ```text
//!  file 0            file 1            file 2  ...  file n-1
//!  [b1 b2 b3 ... ]   [b9 b10 ...   ]   [ free ]     [ free ]
//!                          ^ cursor (file 1, offset)
//! ```
//! Blocks are placed back to back; when one does not fit, the cursor moves to the next
//! file in ring order, which must be free: every block in it below `log_start_seq`
//! (released). Moving to a file takes a new generation. `durable_seq` advances only over
//! a contiguous run of completed blocks, so a block is reported durable only when every
//! earlier block is too, which is exactly what recovery can find.

use std::collections::BTreeSet;

use super::scan::Tail;

/// Where to write the next block and what its header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub file: u32,
    pub offset: u64,
    pub seq: u64,
    pub generation: u64,
    pub durable_seq: u64,
    pub log_start_seq: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("hot log full: the next file in the ring ({file}) still holds unreleased blocks up to seq {held_seq} (log start {log_start_seq})")]
pub struct Full {
    pub file: u32,
    pub held_seq: u64,
    pub log_start_seq: u64,
}

#[derive(Debug)]
pub struct Ring {
    file_bytes: u64,
    /// Per file, the highest seq placed in it.
    file_max_seq: Vec<u64>,
    cursor: Option<(u32, u64)>,
    generation: u64,
    next_seq: u64,
    durable_seq: u64,
    log_start_seq: u64,
    completed: BTreeSet<u64>,
}

impl Ring {
    /// Continues after recovery: a new generation, at the tail position, with everything
    /// recovered counted as durable (the shell syncs every file before this).
    pub fn from_tail(tail: &Tail, file_max_seq: Vec<u64>, file_bytes: u64) -> Ring {
        assert!(!file_max_seq.is_empty() && file_bytes > 0);
        Ring {
            file_bytes,
            file_max_seq,
            cursor: tail.position,
            generation: tail.next_generation,
            next_seq: tail.next_seq,
            durable_seq: tail.next_seq - 1,
            log_start_seq: tail.log_start_seq,
            completed: BTreeSet::new(),
        }
    }

    /// Reserves room for a block of `span` bytes.
    pub fn place(&mut self, span: u64) -> Result<Placement, Full> {
        assert!(
            span > 0 && span <= self.file_bytes,
            "block of {span} bytes cannot fit a file"
        );
        let (file, offset) = match self.cursor {
            Some((f, o)) if o + span <= self.file_bytes => (f, o),
            cursor => {
                let next = cursor.map_or(0, |(f, _)| (f + 1) % self.file_count());
                let held_seq = self.file_max_seq[next as usize];
                if held_seq >= self.log_start_seq {
                    return Err(Full {
                        file: next,
                        held_seq,
                        log_start_seq: self.log_start_seq,
                    });
                }
                if cursor.is_some() {
                    self.generation += 1;
                }
                (next, 0)
            }
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        self.cursor = Some((file, offset + span));
        self.file_max_seq[file as usize] = seq;
        Ok(Placement {
            file,
            offset,
            seq,
            generation: self.generation,
            durable_seq: self.durable_seq,
            log_start_seq: self.log_start_seq,
        })
    }

    /// Marks block `seq` written and synced. Returns the range of seqs that became durable.
    pub fn complete(&mut self, seq: u64) -> std::ops::RangeInclusive<u64> {
        assert!(
            seq > self.durable_seq && seq < self.next_seq,
            "completion of unplaced block {seq}"
        );
        assert!(self.completed.insert(seq), "block {seq} completed twice");
        let from = self.durable_seq + 1;
        while self.completed.remove(&(self.durable_seq + 1)) {
            self.durable_seq += 1;
        }
        from..=self.durable_seq
    }

    /// Declares every block below `seq` released (its records are elsewhere durably), so
    /// files holding only such blocks can be reused. Issue #4's coalescer calls this.
    pub fn release_below(&mut self, seq: u64) {
        assert!(
            seq <= self.durable_seq + 1,
            "releasing blocks that are not durable"
        );
        self.log_start_seq = self.log_start_seq.max(seq);
    }

    /// Releases files from the oldest on, while `unused(file)` says none of their records
    /// is needed any more; stops at the first file still in use, at the file being
    /// written, and at blocks not yet durable. Returns the new log start.
    pub fn release_unused(&mut self, unused: impl Fn(u32) -> bool) -> u64 {
        let current = self.cursor.map(|(f, _)| f);
        loop {
            let oldest = (0..self.file_count())
                .filter(|f| {
                    Some(*f) != current && self.file_max_seq[*f as usize] >= self.log_start_seq
                })
                .min_by_key(|f| self.file_max_seq[*f as usize]);
            let Some(file) = oldest else {
                break;
            };
            let next = self.file_max_seq[file as usize] + 1;
            if !unused(file) || next > self.durable_seq + 1 {
                break;
            }
            self.release_below(next);
        }
        self.log_start_seq
    }

    /// Files holding no unreleased block (free for the writer to move into).
    pub fn files_free(&self) -> u32 {
        let current = self.cursor.map(|(f, _)| f);
        (0..self.file_count())
            .filter(|f| Some(*f) != current && self.file_max_seq[*f as usize] < self.log_start_seq)
            .count() as u32
    }

    pub fn durable_seq(&self) -> u64 {
        self.durable_seq
    }

    pub fn file_count(&self) -> u32 {
        self.file_max_seq.len() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(files: usize, file_bytes: u64) -> Ring {
        let tail = Tail {
            position: None,
            next_seq: 1,
            next_generation: 1,
            log_start_seq: 1,
        };
        Ring::from_tail(&tail, vec![0; files], file_bytes)
    }

    #[test]
    fn durable_only_over_contiguous_completions() {
        let mut r = fresh(2, 16384);
        let a = r.place(4096).unwrap();
        let b = r.place(4096).unwrap();
        assert_eq!((a.seq, b.seq, b.offset), (1, 2, 4096));
        assert!(r.complete(2).is_empty());
        assert_eq!(r.durable_seq(), 0);
        assert_eq!(r.complete(1), 1..=2);
        assert_eq!(r.place(4096).unwrap().durable_seq, 2);
    }

    #[test]
    fn releases_unused_files_oldest_first_and_never_the_current_one() {
        let mut r = fresh(3, 8192);
        // Two 4 KiB blocks per file: seqs 1,2 in file 0; 3,4 in file 1; 5 in file 2.
        for _ in 0..5 {
            let p = r.place(4096).unwrap();
            r.complete(p.seq);
        }
        assert_eq!(r.files_free(), 0);
        // File 1 is unused but file 0 is not: nothing moves.
        assert_eq!(r.release_unused(|f| f == 1), 1);
        // Files 0 and 1 unused: both released; file 2 is being written.
        assert_eq!(r.release_unused(|_| true), 5);
        assert_eq!(r.files_free(), 2);
        assert!(r.place(4096).is_ok());
        assert!(r.place(4096).is_ok(), "moves into the released file 0");
    }

    #[test]
    fn wraps_only_into_released_files() {
        let mut r = fresh(2, 8192);
        for _ in 0..4 {
            let p = r.place(4096).unwrap();
            r.complete(p.seq);
        }
        let full = r.place(4096).unwrap_err();
        assert_eq!(full.file, 0);
        r.release_below(3);
        let p = r.place(4096).unwrap();
        assert_eq!(
            (p.file, p.offset, p.seq, p.generation, p.log_start_seq),
            (0, 0, 5, 3, 3)
        );
    }
}
