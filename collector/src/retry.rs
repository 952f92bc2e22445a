//! The bounded retry buffer: messages whose publish or acknowledgement failed, kept in order
//! with their original `Nats-Msg-Id` so the next cycle can publish them again before its own.
//! JetStream drops the copies of those that did arrive (the acknowledgement was lost, not the
//! message) as duplicates, provided they are re-published within the stream's duplicate window.
//!
//! The buffer holds at most `capacity` messages; beyond that the oldest are dropped and
//! counted, so a long NATS outage costs the oldest cycles, never memory.

use std::collections::VecDeque;

/// One message as it was first published (its id and headers are kept for the retries).
pub type PendingMessage = proxbalance_runtime::OutMessage;

/// Failed messages waiting for the next cycle (see the module documentation).
#[derive(Debug, Clone, Default)]
pub struct RetryBuffer {
    queue: VecDeque<PendingMessage>,
    capacity: usize,
    dropped: u64,
}

impl RetryBuffer {
    /// An empty buffer holding at most `capacity` messages (0 keeps nothing: failures are
    /// only counted).
    pub fn new(capacity: usize) -> Self {
        Self {
            queue: VecDeque::new(),
            capacity,
            dropped: 0,
        }
    }

    /// The bound.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Messages dropped because the buffer was full, since it was created.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Appends a failed message, dropping the oldest when full. Returns how many were dropped.
    pub fn push(&mut self, msg: PendingMessage) -> usize {
        if self.capacity == 0 {
            self.dropped += 1;
            return 1;
        }
        let mut dropped = 0;
        while self.queue.len() >= self.capacity {
            self.queue.pop_front();
            dropped += 1;
        }
        self.queue.push_back(msg);
        self.dropped += dropped as u64;
        dropped
    }

    /// Takes every waiting message, oldest first.
    pub fn take(&mut self) -> Vec<PendingMessage> {
        self.queue.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(i: usize) -> PendingMessage {
        PendingMessage {
            subject: format!("s.{i}"),
            msg_id: format!("id:{i}"),
            message_type: "t",
            stream: "S".into(),
            traceparent: None,
            content_encoding: None,
            payload: vec![i as u8].into(),
        }
    }

    #[test]
    fn keeps_order_and_drops_the_oldest_beyond_the_bound() {
        let mut b = RetryBuffer::new(3);
        for i in 0..5 {
            let dropped = b.push(msg(i));
            assert_eq!(dropped, usize::from(i >= 3));
        }
        assert_eq!(b.len(), 3);
        assert_eq!(b.dropped(), 2);
        let ids: Vec<String> = b.take().into_iter().map(|m| m.msg_id).collect();
        assert_eq!(ids, vec!["id:2", "id:3", "id:4"]);
        assert!(b.is_empty());
    }

    #[test]
    fn capacity_zero_keeps_nothing() {
        let mut b = RetryBuffer::new(0);
        assert_eq!(b.push(msg(1)), 1);
        assert!(b.is_empty());
        assert_eq!(b.dropped(), 1);
    }
}
