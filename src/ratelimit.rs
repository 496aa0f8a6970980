//! The request budget: at most `limit` requests in any one-second window,
//! per credential, region and action, counted the way the API counts them,
//! by arrival.
//!
//! The design is a pool of `limit` slots. A request takes a slot, and the
//! slot comes back usable one window after the request *completed*. The
//! server saw the request at some moment between sending and completion, so
//! two requests that share a slot arrive at least one window apart, whatever
//! the network did to them; `limit` slots therefore never put more than
//! `limit` arrivals in one window. A token bucket, or a window counted from
//! the moment of sending, cannot promise that: a request delayed on the way
//! lands in the next second beside the ones that followed it. The price is
//! one round trip per slot and window, a few percent at the API's latency.
//!
//! No crate on crates.io offers this arrival-safe discipline (governor and
//! its kin are GCRA token buckets), so it is written here, in a few lines
//! over tokio's channel and mutex.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

/// The length of the window the API counts requests in.
pub const WINDOW: Duration = Duration::from_secs(1);

/// The budget of one credential, region and action.
#[derive(Debug)]
pub struct RateLimiter {
    /// Slots ready for use, each holding the moment it may be used again.
    /// The receiver sits behind tokio's fair mutex, so waiting requests are
    /// served in the order they asked.
    ready: tokio::sync::Mutex<mpsc::Receiver<Instant>>,
    returns: mpsc::Sender<Instant>,
    /// Set when the API said "throttled": nobody sends before this moment.
    paused_until: Mutex<Option<Instant>>,
    limit: u32,
}

/// A slot in use; dropping it hands the slot back one window from now.
#[derive(Debug)]
pub struct Slot {
    returns: mpsc::Sender<Instant>,
    /// How long the request waited for its slot.
    pub waited: Duration,
}

impl Drop for Slot {
    fn drop(&mut self) {
        // The channel holds exactly `limit` slots, so there is always room
        // for the one coming back; a closed channel means the limiter is gone.
        let _ = self.returns.try_send(Instant::now() + WINDOW);
    }
}

impl RateLimiter {
    pub fn new(limit: u32) -> Self {
        let limit = limit.max(1);
        let (returns, ready) = mpsc::channel(limit as usize);
        let now = Instant::now();
        for _ in 0..limit {
            returns
                .try_send(now)
                .expect("the channel has room for every slot");
        }
        RateLimiter {
            ready: tokio::sync::Mutex::new(ready),
            returns,
            paused_until: Mutex::new(None),
            limit,
        }
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Waits for a slot; hold it until the request has completed.
    pub async fn acquire(&self) -> Slot {
        let asked = Instant::now();
        let usable_at = {
            let mut ready = self.ready.lock().await;
            // The sender lives in `self`, so the channel cannot close.
            ready
                .recv()
                .await
                .expect("the limiter holds its own sender")
        };
        tokio::time::sleep_until(usable_at).await;
        while let Some(until) = self.pause() {
            tokio::time::sleep_until(until).await;
        }
        Slot {
            returns: self.returns.clone(),
            waited: asked.elapsed(),
        }
    }

    /// Holds back every request of this budget for `duration`, after the API
    /// said the budget was exceeded.
    pub fn pause_for(&self, duration: Duration) {
        let until = Instant::now() + duration;
        let mut paused = self
            .paused_until
            .lock()
            .expect("no code panics holding this lock");
        if paused.is_none_or(|current| current < until) {
            *paused = Some(until);
        }
    }

    fn pause(&self) -> Option<Instant> {
        let paused = self
            .paused_until
            .lock()
            .expect("no code panics holding this lock");
        paused.filter(|until| *until > Instant::now())
    }
}

/// What one budget is counted for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BudgetKey {
    pub secret_id: String,
    pub region: String,
    pub action: &'static str,
}

/// Every budget of the process, made on first use.
#[derive(Debug)]
pub struct RateLimiters {
    state: Mutex<Budgets>,
}

#[derive(Debug)]
struct Budgets {
    limit: u32,
    by_key: HashMap<BudgetKey, Arc<RateLimiter>>,
    /// After the limit changed, new budgets wait until the old ones' slots
    /// have certainly cooled down, so the two never add up in one window.
    fresh_start: Option<Instant>,
}

impl RateLimiters {
    pub fn new(limit: u32) -> Self {
        let budgets = Budgets {
            limit,
            by_key: HashMap::new(),
            fresh_start: None,
        };
        RateLimiters {
            state: Mutex::new(budgets),
        }
    }

    pub fn limit(&self) -> u32 {
        self.state
            .lock()
            .expect("no code panics holding this lock")
            .limit
    }

    /// Changes the limit of every budget. Requests under way finish on the
    /// old budgets; new ones start one window (plus the request deadline)
    /// after the change.
    pub fn set_limit(&self, limit: u32, request_timeout: Duration) {
        let mut state = self.state.lock().expect("no code panics holding this lock");
        if state.limit == limit {
            return;
        }
        state.limit = limit;
        state.by_key.clear();
        state.fresh_start = Some(Instant::now() + WINDOW + request_timeout);
    }

    pub fn get(&self, key: &BudgetKey) -> Arc<RateLimiter> {
        let mut state = self.state.lock().expect("no code panics holding this lock");
        let (limit, fresh_start) = (state.limit, state.fresh_start);
        let limiter = state.by_key.entry(key.clone()).or_insert_with(|| {
            let limiter = RateLimiter::new(limit);
            if let Some(wait) = fresh_start.and_then(|at| at.checked_duration_since(Instant::now()))
            {
                limiter.pause_for(wait);
            }
            Arc::new(limiter)
        });
        Arc::clone(limiter)
    }
}

/// How much of one region's budget a poll interval asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetFit {
    pub region: String,
    /// Requests one cycle sends: pages of every instance of the region.
    pub requests_per_cycle: u64,
    /// Those requests spread over the interval, per second.
    pub demand: f64,
    pub limit: u32,
}

impl BudgetFit {
    pub fn fits(&self) -> bool {
        self.demand <= f64::from(self.limit)
    }

    /// The shortest interval the budget allows for this many requests.
    pub fn shortest_interval(&self) -> Duration {
        Duration::from_secs_f64(self.requests_per_cycle as f64 / f64::from(self.limit.max(1)))
    }

    /// How many keys (each with its own budget) would carry the demand.
    pub fn keys_needed(&self) -> u64 {
        (self.demand / f64::from(self.limit.max(1))).ceil() as u64
    }
}

/// The budget each region needs for `pages` (region, pages of one poll)
/// polled once per `interval`.
pub fn budget_fit<'a>(
    pages: impl IntoIterator<Item = (&'a str, u64)>,
    interval: Duration,
    limit: u32,
) -> Vec<BudgetFit> {
    let mut by_region: HashMap<&str, u64> = HashMap::new();
    for (region, count) in pages {
        *by_region.entry(region).or_default() += count.max(1);
    }
    let seconds = interval.as_secs_f64().max(0.001);
    let mut fits: Vec<BudgetFit> = by_region
        .into_iter()
        .map(|(region, requests)| BudgetFit {
            region: region.to_string(),
            requests_per_cycle: requests,
            demand: requests as f64 / seconds,
            limit,
        })
        .collect();
    fits.sort_by(|a, b| a.region.cmp(&b.region));
    fits
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `count` requests of `latency` each through one limiter, all
    /// asking at once, and returns when each was sent and completed.
    async fn run(limit: u32, count: usize, latency: Duration) -> Vec<(Instant, Instant)> {
        let limiter = Arc::new(RateLimiter::new(limit));
        let mut tasks = Vec::new();
        for _ in 0..count {
            let limiter = Arc::clone(&limiter);
            tasks.push(tokio::spawn(async move {
                let slot = limiter.acquire().await;
                let sent = Instant::now();
                tokio::time::sleep(latency).await;
                let done = Instant::now();
                drop(slot);
                (sent, done)
            }));
        }
        let mut out = Vec::new();
        for task in tasks {
            out.push(task.await.unwrap());
        }
        out
    }

    /// The most moments that fall into any one window starting at one of them.
    fn busiest_window(mut moments: Vec<Instant>) -> usize {
        moments.sort();
        (0..moments.len())
            .map(|i| {
                moments[i..]
                    .iter()
                    .take_while(|m| **m < moments[i] + WINDOW)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    #[tokio::test(start_paused = true)]
    async fn first_window_uses_the_whole_budget_at_once() {
        let start = Instant::now();
        let times = run(5, 5, Duration::ZERO).await;
        assert!(times.iter().all(|(sent, _)| *sent == start));
    }

    #[tokio::test(start_paused = true)]
    async fn requests_beyond_the_budget_wait_a_window_after_completion() {
        let start = Instant::now();
        let times = run(4, 12, Duration::from_millis(100)).await;
        let mut sent: Vec<_> = times.iter().map(|(s, _)| *s - start).collect();
        sent.sort();
        assert_eq!(sent[..4], [Duration::ZERO; 4]);
        assert_eq!(sent[4..8], [Duration::from_millis(1100); 4]);
        assert_eq!(sent[8..], [Duration::from_millis(2200); 4]);
    }

    #[tokio::test(start_paused = true)]
    async fn no_window_holds_more_than_the_limit_whenever_the_server_saw_them() {
        let times = run(10, 60, Duration::from_millis(250)).await;
        // The server saw each request somewhere between sending and
        // completion; try both extremes.
        assert!(busiest_window(times.iter().map(|(s, _)| *s).collect()) <= 10);
        assert!(busiest_window(times.iter().map(|(_, d)| *d).collect()) <= 10);
        let mixed = times
            .iter()
            .enumerate()
            .map(|(i, (s, d))| if i % 2 == 0 { *s } else { *d });
        assert!(busiest_window(mixed.collect()) <= 10);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_back_every_request_of_the_budget() {
        let limiter = RateLimiter::new(3);
        let start = Instant::now();
        limiter.pause_for(Duration::from_secs(2));
        let slot = limiter.acquire().await;
        assert_eq!(Instant::now() - start, Duration::from_secs(2));
        assert_eq!(slot.waited, Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_limit_starts_after_the_old_slots_cooled_down() {
        let limiters = RateLimiters::new(2);
        let key = BudgetKey {
            secret_id: "AKID".into(),
            region: "r".into(),
            action: "A",
        };
        let old = limiters.get(&key);
        let _in_flight = old.acquire().await;
        let start = Instant::now();
        limiters.set_limit(5, Duration::from_secs(10));
        let new = limiters.get(&key);
        assert_eq!(new.limit(), 5);
        let _slot = new.acquire().await;
        assert_eq!(Instant::now() - start, Duration::from_secs(11));
    }

    #[test]
    fn budget_fit_says_what_interval_or_how_many_keys_would_do() {
        let pages = (0..12_000).map(|n| (if n % 2 == 0 { "ap-a" } else { "ap-b" }, 1));
        let fits = budget_fit(pages, Duration::from_secs(300), 20);
        assert_eq!(fits.len(), 2);
        assert_eq!(fits[0].requests_per_cycle, 6000);
        assert_eq!(fits[0].demand, 20.0);
        assert!(fits[0].fits());
        let fits = budget_fit([("ap-a", 3); 4000], Duration::from_secs(60), 20);
        assert!(!fits[0].fits());
        assert_eq!(fits[0].shortest_interval(), Duration::from_secs(600));
        assert_eq!(fits[0].keys_needed(), 10);
    }

    #[test]
    fn budgets_are_separate_per_region_and_shared_per_key() {
        let limiters = RateLimiters::new(20);
        let key = |region: &str| BudgetKey {
            secret_id: "AKID".into(),
            region: region.into(),
            action: "DescribeInstanceBackups",
        };
        assert!(Arc::ptr_eq(
            &limiters.get(&key("ap-guangzhou")),
            &limiters.get(&key("ap-guangzhou"))
        ));
        assert!(!Arc::ptr_eq(
            &limiters.get(&key("ap-guangzhou")),
            &limiters.get(&key("ap-beijing"))
        ));
    }
}
