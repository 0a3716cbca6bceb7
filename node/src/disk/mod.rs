//! The positional storage a shard's logic runs on. The shard is generic over [`Disk`];
//! [`glommio_disk::GlommioDisk`] is the real one (`O_DIRECT` files through `io_uring`) and
//! [`sim::SimDisk`] is an in-memory disk that can lose unsynced writes and tear sectors,
//! for tests.

pub mod glommio_disk;
pub mod sim;

use std::io;
use std::ops::Deref;

/// A set of equally sized files addressed by index. Writes are aligned to 4 KiB.
#[allow(async_fn_in_trait)] // single-threaded shards: no Send bound is wanted
pub trait Disk {
    /// An aligned buffer to fill and hand to `write_at`.
    type Buf: AsMut<[u8]> + AsRef<[u8]>;
    type ReadBuf: Deref<Target = [u8]>;

    fn alloc(&self, bytes: usize) -> Self::Buf;
    fn file_count(&self) -> u32;
    fn file_bytes(&self) -> u64;
    async fn read_at(&self, file: u32, offset: u64, bytes: usize) -> io::Result<Self::ReadBuf>;
    /// Writes the first `bytes` bytes of `buf` at `offset`.
    async fn write_at(
        &self,
        file: u32,
        offset: u64,
        buf: Self::Buf,
        bytes: usize,
    ) -> io::Result<()>;
    /// Makes every completed write to `file` durable (nothing to do when writes are
    /// synchronous).
    async fn sync(&self, file: u32) -> io::Result<()>;
    /// Makes `file` durable whatever this disk's write mode: what an earlier process wrote
    /// (perhaps in another mode) may still sit in a volatile cache. Recovery calls it.
    async fn sync_always(&self, file: u32) -> io::Result<()> {
        self.sync(file).await
    }
    /// Whether `sync` does real work (false when writes are already synchronous).
    fn sync_is_needed(&self) -> bool {
        true
    }
}
