//! The real disk: preallocated, zero-filled files opened with `O_DIRECT` and driven through
//! glommio's `io_uring` reactor.

use std::io;
use std::path::{Path, PathBuf};

use glommio::io::{DmaBuffer, DmaFile, OpenOptions, ReadResult};

use super::Disk;

/// Bytes written per call while zero-filling a new file.
const ZERO_FILL_CHUNK_BYTES: usize = 1 << 20;

pub struct DmaBuf(DmaBuffer);

impl AsRef<[u8]> for DmaBuf {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl AsMut<[u8]> for DmaBuf {
    fn as_mut(&mut self) -> &mut [u8] {
        self.0.as_bytes_mut()
    }
}

pub struct GlommioDisk {
    files: Vec<DmaFile>,
    file_bytes: u64,
    dsync: bool,
}

fn with_path(e: impl std::fmt::Display, path: &Path) -> io::Error {
    io::Error::other(format!("{}: {e}", path.display()))
}

impl GlommioDisk {
    /// Opens `count` files named `<prefix>-NNNN.log` in `dir`, creating missing ones
    /// zero-filled. A new file is filled under a temporary name, synced, renamed into place
    /// and the directory synced, so a crash never leaves a half-filled file under the final
    /// name. `dsync` opens files with `O_DSYNC`, so a write is durable when it completes.
    pub async fn open(
        dir: &Path,
        prefix: &str,
        count: u32,
        file_bytes: u64,
        dsync: bool,
    ) -> io::Result<GlommioDisk> {
        assert!(
            file_bytes.is_multiple_of(ZERO_FILL_CHUNK_BYTES as u64),
            "file size is a multiple of 1 MiB"
        );
        let mut files = Vec::with_capacity(count as usize);
        let mut created = false;
        for i in 0..count {
            let path = dir.join(format!("{prefix}-{i:04}.log"));
            if !path.exists() {
                create_zero_filled(&path, file_bytes)?;
                created = true;
            }
            let mut opts = OpenOptions::new();
            opts.read(true).write(true);
            if dsync {
                opts.custom_flags(libc::O_DSYNC);
            }
            let file = opts
                .dma_open(&path)
                .await
                .map_err(|e| with_path(e, &path))?;
            let size = file.file_size().await.map_err(|e| with_path(e, &path))?;
            if size != file_bytes {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: hot-log file is {size} bytes but the config says hot_log.file_bytes = {file_bytes}; \
                         restore the old setting or move the data directory away",
                        path.display()
                    ),
                ));
            }
            files.push(file);
        }
        if created {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(GlommioDisk {
            files,
            file_bytes,
            dsync,
        })
    }
}

/// Creates a zero-filled file with plain buffered I/O. Deliberately not through glommio:
/// glommio probes a device for `io_poll` support by reading the first file it opens there, and
/// a probe against an empty file succeeds vacuously, after which every read on that device
/// fails with EOPNOTSUPP on devices without poll queues (seen on virtio-blk).
fn create_zero_filled(path: &Path, file_bytes: u64) -> io::Result<()> {
    use std::io::Write;
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    let mut file = std::fs::File::create(&tmp).map_err(|e| with_path(e, &tmp))?;
    let zeros = vec![0u8; ZERO_FILL_CHUNK_BYTES];
    let mut at = 0u64;
    while at < file_bytes {
        file.write_all(&zeros).map_err(|e| with_path(e, &tmp))?;
        at += ZERO_FILL_CHUNK_BYTES as u64;
    }
    file.sync_all().map_err(|e| with_path(e, &tmp))?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

impl Disk for GlommioDisk {
    type Buf = DmaBuf;
    type ReadBuf = ReadResult;

    fn alloc(&self, bytes: usize) -> DmaBuf {
        DmaBuf(self.files[0].alloc_dma_buffer(bytes))
    }

    fn file_count(&self) -> u32 {
        self.files.len() as u32
    }

    fn file_bytes(&self) -> u64 {
        self.file_bytes
    }

    async fn read_at(&self, file: u32, offset: u64, bytes: usize) -> io::Result<ReadResult> {
        Ok(self.files[file as usize]
            .read_at_aligned(offset, bytes)
            .await?)
    }

    async fn write_at(
        &self,
        file: u32,
        offset: u64,
        mut buf: DmaBuf,
        bytes: usize,
    ) -> io::Result<()> {
        buf.0.trim_to_size(bytes);
        let n = self.files[file as usize].write_at(buf.0, offset).await?;
        if n != bytes {
            return Err(io::Error::other(format!(
                "short write: {n} of {bytes} bytes at offset {offset}"
            )));
        }
        Ok(())
    }

    async fn sync(&self, file: u32) -> io::Result<()> {
        if self.dsync {
            return Ok(());
        }
        Ok(self.files[file as usize].fdatasync().await?)
    }

    async fn sync_always(&self, file: u32) -> io::Result<()> {
        Ok(self.files[file as usize].fdatasync().await?)
    }

    fn sync_is_needed(&self) -> bool {
        !self.dsync
    }
}
