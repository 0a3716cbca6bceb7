//! One-segment page reads with a hedge: ask the best segment; if it has not answered after
//! twice its usual latency, ask the next one too; the first page wins. A segment that
//! cannot answer (not complete, too old, an error, a lost connection) hands over at once.
//! Shared by the writer ([`super::Volume::read_page`]) and readers
//! ([`super::VolumeReader::read_page`]).

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::sync::Notify;
use crate::types::{Lsn, NodeId};
use crate::wire::Message;

/// Shortest wait before a page read is hedged to a second segment.
pub const HEDGE_MIN: Duration = Duration::from_micros(500);

/// A page as read: its bytes, the LSN of the last record applied, and who answered.
#[derive(Debug, Clone)]
pub struct PageRead {
    pub page_lsn: Lsn,
    pub data: Bytes,
    pub node: NodeId,
    /// Whether more than one segment was asked.
    pub hedged: bool,
}

/// One request in flight: who, and its reply (`None`: the connection was lost).
pub(crate) type Asked = (NodeId, Pin<Box<dyn Future<Output = Option<Message>>>>);

/// Replies to one request sent to several segments, as they arrive.
#[derive(Default)]
struct Race {
    answers: RefCell<Vec<(NodeId, Option<Message>)>>,
    arrived: Notify,
}

impl Race {
    fn launch(self: &Rc<Self>, (node, reply): Asked) {
        let race = self.clone();
        glommio::spawn_local(async move {
            let reply = reply.await;
            race.answers.borrow_mut().push((node, reply));
            race.arrived.notify();
        })
        .detach();
    }
}

/// Asks candidate 0 (`ask(0)`), hedges to candidate 1 after twice `latency` (at least
/// `HEDGE_MIN`), moves on to the next candidate whenever one fails, and gives up after
/// `timeout`. Returns the first page, or every failure.
pub(crate) async fn hedged(
    candidates: usize,
    latency: Duration,
    timeout: Duration,
    ask: impl Fn(usize) -> Asked,
) -> Result<PageRead, Vec<String>> {
    let race = Rc::new(Race::default());
    let started = Instant::now();
    race.launch(ask(0));
    let mut asked = 1;
    let mut failures = Vec::new();
    let hedge_at = started + (latency * 2).max(HEDGE_MIN);
    loop {
        let got = race.answers.borrow_mut().pop();
        match got {
            Some((node, Some(Message::Page { page_lsn, data, .. }))) => {
                return Ok(PageRead {
                    page_lsn,
                    data,
                    node,
                    hedged: asked > 1,
                })
            }
            Some((node, other)) => {
                failures.push(format!(
                    "node {node}: {}",
                    other.map_or("connection lost".into(), |m| format!("{m:?}"))
                ));
                if asked < candidates {
                    race.launch(ask(asked));
                    asked += 1;
                } else if failures.len() == asked {
                    return Err(failures);
                }
                continue;
            }
            None => {}
        }
        let now = Instant::now();
        if now >= started + timeout {
            failures.push(format!("no answer within {timeout:?}"));
            return Err(failures);
        }
        if asked == 1 && now >= hedge_at && candidates > 1 {
            race.launch(ask(1));
            asked = 2;
            continue;
        }
        let wake = if asked == 1 {
            hedge_at
        } else {
            started + timeout
        };
        futures_lite::future::or(
            race.arrived.notified(),
            glommio::timer::sleep(wake.saturating_duration_since(now)),
        )
        .await;
    }
}
