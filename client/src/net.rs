//! The transport seam of the client: every connection the writer, a reader or a volume
//! open makes goes through a [`Network`]. [`Network::Tcp`] (the default) is glommio TCP
//! with Nagle off; a simulation supplies its own [`Connector`] whose streams are
//! in-memory pipes to shards in the same process (`tests/tests/cluster_sim.rs`), so the
//! real writer, recovery and read code run against simulated nodes, links and faults.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncWrite};

/// A byte stream to one shard.
pub trait Conn: AsyncRead + AsyncWrite + Unpin {}

impl<T: AsyncRead + AsyncWrite + Unpin> Conn for T {}

pub type BoxConn = Box<dyn Conn>;

/// What a simulated network implements: open a stream to `addr`. `Send + Sync` so that a
/// [`crate::volume::VolumeConfig`] can still be built on one thread and used on another; a
/// simulation keeps its state on its executor's thread and finds it from there.
pub trait Connector: Send + Sync {
    fn connect(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = io::Result<BoxConn>>>>;
}

/// Where connections go.
#[derive(Clone, Default)]
pub enum Network {
    /// glommio TCP, `TCP_NODELAY` set (acks are small and must not wait behind Nagle).
    #[default]
    Tcp,
    /// Streams from a [`Connector`] (simulations).
    Custom(Arc<dyn Connector>),
}

impl fmt::Debug for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Network::Tcp => f.write_str("Tcp"),
            Network::Custom(_) => f.write_str("Custom"),
        }
    }
}

impl Network {
    /// Opens a stream to `addr`, giving up after `timeout`.
    pub async fn connect(&self, addr: SocketAddr, timeout: Duration) -> io::Result<BoxConn> {
        match self {
            Network::Tcp => {
                let stream = glommio::net::TcpStream::connect_timeout(addr, timeout)
                    .await
                    .map_err(io::Error::from)?;
                let _ = stream.set_nodelay(true);
                Ok(Box::new(stream))
            }
            Network::Custom(c) => c.connect(addr, timeout).await,
        }
    }
}
