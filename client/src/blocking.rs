//! A synchronous, pipelining connection to one shard of a node. Used by tests, the bench's
//! single-node mode and admin tools; the database-facing quorum client is asynchronous
//! and arrives with issue #3.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::BytesMut;

use crate::wire::frame::take_frame;
use crate::wire::message::MessageError;
use crate::wire::transport::FrameTransport;
use crate::wire::{FrameError, Message, PROTOCOL_VERSION};

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("peer sent a bad frame: {0}")]
    Frame(#[from] FrameError),
    #[error("peer sent a bad message: {0}")]
    Message(#[from] MessageError),
    #[error("connection closed by peer")]
    Closed,
    #[error("unexpected reply: {0}")]
    Unexpected(String),
}

/// One connection; requests may be pipelined with [`Connection::send`] and replies read
/// with [`Connection::recv`] in whatever order the node sends them.
pub struct Connection<T: FrameTransport = TcpStream> {
    transport: T,
    recv_buf: BytesMut,
    next_request_id: u64,
}

impl Connection<TcpStream> {
    /// Connects over TCP with `TCP_NODELAY` and a read timeout.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> Result<Self, ConnError> {
        // A signal (e.g. from an executor on the same thread) may interrupt the connect.
        let stream = loop {
            match TcpStream::connect_timeout(&addr, timeout) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break other?,
            }
        };
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        Ok(Connection::new(stream))
    }

    /// The underlying stream, e.g. to shut it down.
    pub fn stream(&self) -> &TcpStream {
        &self.transport
    }
}

impl<T: FrameTransport> Connection<T> {
    pub fn new(transport: T) -> Self {
        Connection {
            transport,
            recv_buf: BytesMut::with_capacity(64 * 1024),
            next_request_id: 1,
        }
    }

    /// Sends one request; returns its request id.
    pub fn send(&mut self, msg: &Message) -> Result<u64, ConnError> {
        let id = self.next_request_id;
        self.next_request_id += 1;
        self.transport.send(&msg.to_frame(id))?;
        Ok(id)
    }

    /// Sends raw bytes as they are (tests use it to send broken frames).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ConnError> {
        Ok(self.transport.send(bytes)?)
    }

    /// Receives the next reply: `(request_id, message)`.
    pub fn recv(&mut self) -> Result<(u64, Message), ConnError> {
        loop {
            if let Some((header, body)) = take_frame(&mut self.recv_buf)? {
                return Ok((header.request_id, Message::decode(header.kind, body)?));
            }
            if self.transport.recv(&mut self.recv_buf)? == 0 {
                return Err(ConnError::Closed);
            }
        }
    }

    /// Sends a request and waits for the reply to it (no other requests may be in flight).
    pub fn call(&mut self, msg: &Message) -> Result<Message, ConnError> {
        let id = self.send(msg)?;
        let (got, reply) = self.recv()?;
        if got != id {
            return Err(ConnError::Unexpected(format!(
                "reply to request {got}, expected {id}"
            )));
        }
        Ok(reply)
    }

    /// Performs the handshake and returns the node's `HelloOk`.
    pub fn hello(&mut self) -> Result<Message, ConnError> {
        match self.call(&Message::Hello {
            protocol_version: PROTOCOL_VERSION,
        })? {
            ok @ Message::HelloOk { .. } => Ok(ok),
            other => Err(ConnError::Unexpected(format!("{other:?}"))),
        }
    }
}
