//! The messages put in the queue since the scheduler last looked: what the SMTP sessions and
//! the runner's own DSNs tell the scheduler, so that it visits them without listing the spool.

use std::sync::Arc;

/// The ids of messages put in the queue, for the scheduler to visit without listing the
/// spool: the SMTP sessions add theirs (then wake the runner), and so do the runner's own
/// DSNs. Bounded: past [`MAX_ARRIVALS`] the list is dropped and the next listing of the
/// spool finds them.
#[derive(Clone, Default)]
pub struct Arrivals(Arc<std::sync::Mutex<(Vec<String>, bool)>>);

/// Arrivals remembered at most between two looks.
const MAX_ARRIVALS: usize = 100_000;

impl Arrivals {
    /// Notes that message `id` was put in the queue.
    pub fn add(&self, id: &str) {
        let mut a = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if a.0.len() >= MAX_ARRIVALS {
            a.0.clear();
            a.1 = true;
        }
        a.0.push(id.to_string());
    }

    /// The ids added since the last call, and whether some were dropped (list the spool).
    pub(super) fn take(&self) -> (Vec<String>, bool) {
        let mut a = self.0.lock().unwrap_or_else(|p| p.into_inner());
        (std::mem::take(&mut a.0), std::mem::take(&mut a.1))
    }
}
