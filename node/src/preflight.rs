//! Checks run before a node starts, so that a bad environment is one clear line naming the
//! problem instead of a panic deep inside an executor.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::config::NodeConfig;

const PROBE_BYTES: usize = 4096;

/// Runs every check; the error is one line.
pub fn check(cfg: &NodeConfig) -> Result<(), String> {
    check_data_dir(&cfg.data_dir)?;
    check_io_uring()?;
    for shard in 0..cfg.shard_count() {
        check_port_free(
            SocketAddr::new(cfg.listen_addr, cfg.shard_port(shard)),
            shard,
        )?;
    }
    Ok(())
}

/// The data directory exists, is writable, and supports O_DIRECT.
pub fn check_data_dir(dir: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(dir).map_err(|e| {
        format!(
            "data directory {} is not usable: {e} (create it, or fix data_dir)",
            dir.display()
        )
    })?;
    if !meta.is_dir() {
        return Err(format!(
            "data directory {} is not a directory",
            dir.display()
        ));
    }
    let probe = dir.join(".hexad-probe");
    let result = probe_file(&probe);
    let _ = std::fs::remove_file(&probe);
    result
}

fn probe_file(probe: &Path) -> Result<(), String> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(probe)
        .map_err(|e| format!("data directory {} is not writable: {e}", parent(probe)))?;
    let mut direct = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(probe)
        .map_err(|e| {
            format!(
                "data directory {} does not support O_DIRECT ({e}); tmpfs does not — put data_dir on ext4 or xfs",
                parent(probe)
            )
        })?;
    // An aligned buffer without unsafe: the aligned window inside a larger Vec.
    let backing = vec![0u8; 2 * PROBE_BYTES];
    let skip = backing.as_ptr().align_offset(PROBE_BYTES);
    direct.write_all(&backing[skip..skip + PROBE_BYTES]).map_err(|e| {
        format!(
            "data directory {} rejected an O_DIRECT write ({e}); put data_dir on a filesystem that supports direct I/O",
            parent(probe)
        )
    })
}

fn parent(p: &Path) -> String {
    p.parent()
        .map_or_else(String::new, |d| d.display().to_string())
}

/// io_uring can be set up (a seccomp policy or `kernel.io_uring_disabled` may forbid it).
pub fn check_io_uring() -> Result<(), String> {
    io_uring::IoUring::new(4).map(drop).map_err(|e| {
        format!("io_uring is unavailable ({e}): the kernel, kernel.io_uring_disabled or a seccomp policy (e.g. a container's default) blocks it; hexad-node needs io_uring")
    })
}

/// Nothing listens on the port. glommio binds with SO_REUSEPORT, which would silently
/// share a port with another node, so bind once without it first.
pub fn check_port_free(addr: SocketAddr, shard: u16) -> Result<(), String> {
    TcpListener::bind(addr)
        .map(drop)
        .map_err(|e| format!("cannot listen on {addr} for shard {shard}: {e} (is another node running? change base_port)"))
}
