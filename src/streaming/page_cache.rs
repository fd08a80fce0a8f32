//! Pull pages shared between consumers: one commit wakes every consumer's long poll at the same
//! seq, and each would read the same logs and serialise the same page.
//!
//! The logs of a seq range never change once the range is at or below the newest committed
//! seq, so the rows read for one consumer serve the next that asks for that range, and a page
//! body already encoded serves every consumer that receives exactly the same logs (same types
//! approved, none of its own among them, no condition rewriting them).

use super::page::Encoded;
use crate::store::Doc;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// Ranges of rows kept.
const ROW_RANGES: usize = 8;
/// Encoded bodies kept.
const BODIES: usize = 32;

/// What makes two page bodies the same.
#[derive(Debug, PartialEq, Eq)]
struct BodyKey {
    last_seq: i64,
    has_more: bool,
    /// Asked for a bound page: a log over the page bound goes as a stub.
    stub: bool,
    seqs: Vec<i64>,
}

/// The rows of one seq range `(from, upto]`.
type Range = ((i64, i64), Arc<Vec<Doc>>);

/// Recently read log rows and encoded page bodies, most recent last.
#[derive(Debug, Default)]
pub struct PageCache {
    rows: Mutex<VecDeque<Range>>,
    bodies: Mutex<VecDeque<(BodyKey, Encoded)>>,
}

fn keep<K, V>(q: &mut VecDeque<(K, V)>, key: K, value: V, cap: usize) {
    if q.len() >= cap {
        q.pop_front();
    }
    q.push_back((key, value));
}

impl PageCache {
    /// The rows of logs `from < seq <= upto`, if a pull read them lately.
    pub fn rows(&self, from: i64, upto: i64) -> Option<Arc<Vec<Doc>>> {
        let q = self.rows.lock().expect("page cache lock");
        q.iter()
            .rev()
            .find(|(k, _)| *k == (from, upto))
            .map(|(_, v)| v.clone())
    }

    /// Keeps the rows of `from < seq <= upto` (all committed) for the next pull of that range.
    pub fn keep_rows(&self, from: i64, upto: i64, rows: Arc<Vec<Doc>>) {
        keep(
            &mut self.rows.lock().expect("page cache lock"),
            (from, upto),
            rows,
            ROW_RANGES,
        );
    }

    /// The page encoded lately for exactly these logs (the range's end, whether more follows,
    /// the seqs of the logs it holds), or the one `encode` makes now.
    pub fn body(
        &self,
        last_seq: i64,
        has_more: bool,
        stub: bool,
        seqs: Vec<i64>,
        encode: impl FnOnce() -> Encoded,
    ) -> Encoded {
        let key = BodyKey {
            last_seq,
            has_more,
            stub,
            seqs,
        };
        if let Some((_, b)) = self
            .bodies
            .lock()
            .expect("page cache lock")
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
        {
            return b.clone();
        }
        let page = encode();
        keep(
            &mut self.bodies.lock().expect("page cache lock"),
            key,
            page.clone(),
            BODIES,
        );
        page
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_shared_only_for_the_same_logs() {
        let cache = PageCache::default();
        let mut made = 0;
        let mut get = |seqs: Vec<i64>, more: bool, stub: bool| {
            cache
                .body(10, more, stub, seqs.clone(), || {
                    made += 1;
                    Encoded {
                        body: format!("{seqs:?}{more}{stub}").into(),
                        count: seqs.len(),
                        last_seq: 10,
                        has_more: more,
                    }
                })
                .body
        };
        assert_eq!(&*get(vec![9, 10], false, false), "[9, 10]falsefalse");
        assert_eq!(&*get(vec![9, 10], false, false), "[9, 10]falsefalse");
        assert_eq!(&*get(vec![10], false, false), "[10]falsefalse");
        assert_eq!(&*get(vec![9, 10], true, false), "[9, 10]truefalse");
        assert_eq!(&*get(vec![9, 10], true, true), "[9, 10]truetrue");
        assert_eq!(made, 4);
    }

    #[test]
    fn old_ranges_leave_the_cache() {
        let cache = PageCache::default();
        for i in 0..(ROW_RANGES as i64 + 1) {
            cache.keep_rows(i, i + 1, Arc::new(Vec::new()));
        }
        assert!(cache.rows(0, 1).is_none());
        assert!(cache.rows(1, 2).is_some());
        assert!(cache.rows(1, 3).is_none());
    }
}
