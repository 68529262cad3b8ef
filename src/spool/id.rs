//! Queue ids: 16 lowercase hex digits of a strictly increasing microsecond counter.
//!
//! Time-ordered (a listing sorted by id is sorted by arrival), filename-safe, and unique: the
//! generator never hands out the same value twice in a process, and at start-up it is seeded
//! past every id already in the spool, so even a clock that stepped backwards cannot reuse one.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A queue id, e.g. `0006455f3c2a1b2c`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueId(u64);

impl QueueId {
    /// Parses the text form (exactly 16 lowercase hex digits).
    pub fn parse(text: &str) -> Option<QueueId> {
        if text.len() != 16
            || !text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return None;
        }
        u64::from_str_radix(text, 16).ok().map(QueueId)
    }
}

impl QueueId {
    /// When the id was made (to the microsecond; ids are made when a message arrives).
    pub fn time(&self) -> SystemTime {
        UNIX_EPOCH + std::time::Duration::from_micros(self.0)
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QueueId({self})")
    }
}

/// Hands out ids; shared by every session of one spool.
#[derive(Debug, Default)]
pub(crate) struct IdGen {
    last: AtomicU64,
}

impl IdGen {
    /// Makes sure every later id is greater than `seen`.
    pub fn observe(&self, seen: QueueId) {
        self.last.fetch_max(seen.0, Ordering::Relaxed);
    }

    /// The next id: the current time in microseconds, or one more than the last id if the
    /// clock has not moved (or moved back).
    pub fn next(&self) -> QueueId {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let candidate = now.max(last + 1);
            match self.last.compare_exchange_weak(
                last,
                candidate,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return QueueId(candidate),
                Err(actual) => last = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_increase_and_round_trip() {
        let g = IdGen::default();
        let a = g.next();
        let b = g.next();
        assert!(b > a);
        assert_eq!(a.to_string().len(), 16);
        assert_eq!(QueueId::parse(&a.to_string()), Some(a));
    }

    #[test]
    fn observed_ids_are_never_reused() {
        let g = IdGen::default();
        let future = QueueId(u64::MAX / 2);
        g.observe(future);
        assert!(g.next() > future);
    }

    #[test]
    fn parse_rejects_anything_but_16_lowercase_hex() {
        for bad in [
            "",
            "0006455F3C2A1B2C",
            "0006455f3c2a1b2",
            "../../etc/passwd",
            "0006455f3c2a1b2g",
        ] {
            assert_eq!(QueueId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn concurrent_ids_are_unique() {
        let g = std::sync::Arc::new(IdGen::default());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let g = g.clone();
                std::thread::spawn(move || (0..1000).map(|_| g.next()).collect::<Vec<_>>())
            })
            .collect();
        let mut all: Vec<_> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 4000);
    }
}
