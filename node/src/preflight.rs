//! Checks run before a node starts, so that a bad environment is one clear line naming the
//! problem instead of a panic deep inside an executor.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::config::NodeConfig;

const PROBE_BYTES: usize = 4096;
/// How long to wait for an answer when probing a port for a listener.
const PORT_PROBE_TIMEOUT: Duration = Duration::from_millis(300);
/// How long a start waits for a lingering listener on its port to disappear.
pub const PORT_RELEASE_WAIT: Duration = Duration::from_secs(5);

/// Runs every check; the error is one line. What is worth saying but does not stop a
/// start (a full disk) comes back as warnings.
pub fn check(cfg: &NodeConfig) -> Result<Vec<String>, String> {
    let warnings = check_data_dir(&cfg.data_dir)?.into_iter().collect();
    check_io_uring()?;
    for shard in 0..cfg.shard_count() {
        check_port_free(
            SocketAddr::new(cfg.listen_addr, cfg.shard_port(shard)),
            shard,
        )?;
    }
    Ok(warnings)
}

/// The data directory exists, is writable, and supports `O_DIRECT`. A full disk is not a
/// reason to refuse: the hot log is preallocated, so a node restarted there can serve what
/// it holds and take appends; the warning says what will fail.
pub fn check_data_dir(dir: &Path) -> Result<Option<String>, String> {
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
    check_not_in_memory(dir)?;
    let probe = dir.join(".hexad-probe");
    let result = probe_file(&probe);
    let _ = std::fs::remove_file(&probe);
    result
}

/// A memory-backed filesystem loses everything at reboot, and only some kernels accept
/// `O_DIRECT` on it (tmpfs does since Linux 6.6), so refuse it by type.
fn check_not_in_memory(dir: &Path) -> Result<(), String> {
    use nix::sys::statfs::{statfs, FsType, TMPFS_MAGIC};
    const RAMFS_MAGIC: FsType = FsType(0x8584_58f6);
    let fs =
        statfs(dir).map_err(|e| format!("cannot statfs data directory {}: {e}", dir.display()))?;
    let kind = fs.filesystem_type();
    if kind == TMPFS_MAGIC || kind == RAMFS_MAGIC {
        return Err(format!(
            "data directory {} is on a memory filesystem (tmpfs/ramfs): no O_DIRECT durability there; put data_dir on ext4 or xfs",
            dir.display()
        ));
    }
    Ok(())
}

fn probe_file(probe: &Path) -> Result<Option<String>, String> {
    if let Err(e) = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(probe)
    {
        return full_or(probe, &e, || {
            format!("data directory {} is not writable: {e}", parent(probe))
        });
    }
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
    match direct.write_all(&backing[skip..skip + PROBE_BYTES]) {
        Ok(()) => Ok(None),
        Err(e) => full_or(probe, &e, || {
            format!(
                "data directory {} rejected an O_DIRECT write ({e}); put data_dir on a filesystem that supports direct I/O",
                parent(probe)
            )
        }),
    }
}

/// A probe that failed for want of space (or quota) is a warning; any other failure is the
/// error `other` describes.
fn full_or(
    probe: &Path,
    e: &std::io::Error,
    other: impl FnOnce() -> String,
) -> Result<Option<String>, String> {
    match e.raw_os_error() {
        Some(libc::ENOSPC | libc::EDQUOT) => Ok(Some(format!(
            "data directory {} is full ({e}): starting with the space it has; the preallocated hot log takes appends, \
             but saving segment metadata (fences, truncations, floors) and growing the page store fail until space is freed",
            parent(probe)
        ))),
        _ => Err(other()),
    }
}

fn parent(p: &Path) -> String {
    p.parent()
        .map_or_else(String::new, |d| d.display().to_string())
}

/// `io_uring` can be set up (a seccomp policy or `kernel.io_uring_disabled` may forbid it).
pub fn check_io_uring() -> Result<(), String> {
    io_uring::IoUring::new(4).map(drop).map_err(|e| {
        format!("io_uring is unavailable ({e}): the kernel, kernel.io_uring_disabled or a seccomp policy (e.g. a container's default) blocks it; hexad-node needs io_uring")
    })
}

/// Nothing listens on the port. glommio binds with `SO_REUSEPORT`, which would silently
/// share a port with another node, so probe for a listener by connecting. (A plain bind
/// test would be wrong: after a kill -9 the dead node's connections linger in `TIME_WAIT` on
/// the port, and a restart must still succeed.) A listener of a process that was just
/// killed can outlive it briefly (seen right after SIGKILL; the kernel tears down the
/// dead node's `io_uring` asynchronously), so wait up to [`PORT_RELEASE_WAIT`] for it to go.
pub fn check_port_free(addr: SocketAddr, shard: u16) -> Result<(), String> {
    let probe = if addr.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    };
    let started = Instant::now();
    let mut said = false;
    loop {
        match TcpStream::connect_timeout(&probe, PORT_PROBE_TIMEOUT) {
            // A port in the ephemeral range can "connect" to itself (TCP simultaneous
            // open) when nothing listens: that is not a listener.
            Ok(s) if s.local_addr().ok() == s.peer_addr().ok() => return Ok(()),
            Ok(_) if started.elapsed() < PORT_RELEASE_WAIT => {
                if !said {
                    eprintln!("hexad-node: {addr} (shard {shard}) is still held by a listener; waiting up to {PORT_RELEASE_WAIT:?} for it to go");
                    said = true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(_) => {
                return Err(format!(
                    "cannot listen on {addr} for shard {shard}: port already in use by a running server (is another node running? change base_port)"
                ))
            }
            Err(_) => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_a_warning_and_anything_else_an_error() {
        let probe = Path::new("/data/.hexad-probe");
        for errno in [libc::ENOSPC, libc::EDQUOT] {
            let e = std::io::Error::from_raw_os_error(errno);
            let warning = full_or(probe, &e, || "other".into()).unwrap().unwrap();
            assert!(warning.contains("/data is full"), "{warning}");
        }
        let e = std::io::Error::from_raw_os_error(libc::EINVAL);
        assert_eq!(full_or(probe, &e, || "other".into()), Err("other".into()));
    }
}
