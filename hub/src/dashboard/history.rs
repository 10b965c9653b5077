//! The last hour of the hub's own metrics, for the dashboard's charts.
//!
//! Prometheus counters hold totals since start, and a scrape-less hub has no time series:
//! so a sampler task ([`sample_every`], on the hub's tracker, ending with its shutdown)
//! copies the totals every [`INTERVAL`] into a ring of [`SAMPLES`] — bounded memory
//! whatever the traffic — and a chart point is the difference between neighbouring
//! samples. The totals are a [`Tally`] fed beside the Prometheus metrics from every
//! stream's record, plus the live relays' byte counters, so bytes of a long stream show
//! while they move rather than all at its end.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use crate::{
    activity::{Outcome, Record},
    Hub,
};

/// Time between samples.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// Samples kept: one hour at [`INTERVAL`], plus the one the first point starts from.
pub const SAMPLES: usize = 361;
/// Set-up time buckets: upper bounds 0.5 ms doubling up to ~16 s (as the
/// `stream_hub_stream_setup_seconds` histogram's), then one for anything slower.
pub const SETUP_BUCKETS: usize = 16;

/// The upper bound of set-up bucket `i`, in seconds.
pub fn setup_bound(i: usize) -> f64 {
    0.0005 * (1u64 << i.min(SETUP_BUCKETS)) as f64
}

/// Running totals since the hub started, updated as each stream's record is written.
#[derive(Default)]
pub struct Tally {
    streams: AtomicU64,
    accepted: AtomicU64,
    bytes: AtomicU64,
    setup: [AtomicU64; SETUP_BUCKETS + 1],
}

impl Tally {
    pub fn record(&self, r: &Record<'_>) {
        self.streams.fetch_add(1, Ordering::Relaxed);
        if matches!(r.outcome, Outcome::Accepted) {
            self.accepted.fetch_add(1, Ordering::Relaxed);
        }
        let bytes = r.bytes_to_device.saturating_add(r.bytes_from_device);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        if let Some(setup) = r.setup {
            let s = setup.as_secs_f64();
            let bucket = (0..SETUP_BUCKETS)
                .find(|&i| s <= setup_bound(i))
                .unwrap_or(SETUP_BUCKETS);
            self.setup[bucket].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The hub's totals at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    /// Unix seconds.
    pub at: u64,
    /// Stream requests that ended (any result), and those accepted.
    pub streams: u64,
    pub accepted: u64,
    /// Bytes relayed both ways: ended streams' and open streams' so far.
    pub bytes: u64,
    /// Streams that paired, by set-up time bucket.
    pub setup: [u64; SETUP_BUCKETS + 1],
    /// Devices connected at that instant.
    pub devices: u64,
}

/// One chart point: what happened between two samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    /// Unix seconds at the end of the interval.
    pub at: u64,
    pub streams_per_s: f64,
    pub accepted_per_s: f64,
    pub bytes_per_s: f64,
    /// Set-up time percentiles (p50, p90, p99) in milliseconds, if any stream paired.
    pub setup_ms: Option<[f64; 3]>,
    pub devices: u64,
}

/// The ring of samples.
#[derive(Default)]
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    pub fn push(&self, s: Sample) {
        let mut ring = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if ring.len() == SAMPLES {
            ring.pop_front();
        }
        ring.push_back(s);
    }

    /// The points of the last hour, oldest first, and one more from the last sample to
    /// `now` when that interval is at least a second long (so the newest point is live).
    pub fn points(&self, now: Sample) -> Vec<Point> {
        let ring = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let mut points: Vec<Point> = ring
            .iter()
            .zip(ring.iter().skip(1))
            .filter_map(|(a, b)| point(a, b))
            .collect();
        if let Some(last) = ring.back().filter(|l| now.at > l.at) {
            points.extend(point(last, &now));
        }
        points
    }
}

/// What happened between samples `a` and `b`; none if they are not in order (a clock set
/// back) — a counter never goes down, but a live byte count can (a stream's bytes move
/// from the relay's counter to its record), so differences are floored at zero.
fn point(a: &Sample, b: &Sample) -> Option<Point> {
    let secs = b.at.checked_sub(a.at).filter(|&s| s > 0)? as f64;
    let rate = |x: u64, y: u64| y.saturating_sub(x) as f64 / secs;
    let mut counts = [0u64; SETUP_BUCKETS + 1];
    for (i, c) in counts.iter_mut().enumerate() {
        *c = b.setup[i].saturating_sub(a.setup[i]);
    }
    Some(Point {
        at: b.at,
        streams_per_s: rate(a.streams, b.streams),
        accepted_per_s: rate(a.accepted, b.accepted),
        bytes_per_s: rate(a.bytes, b.bytes),
        setup_ms: percentiles(&counts),
        devices: b.devices,
    })
}

/// p50, p90 and p99 of the bucket counts in milliseconds, interpolated within a bucket
/// (as Prometheus' `histogram_quantile` does); the last, open bucket reads as its floor.
pub fn percentiles(counts: &[u64; SETUP_BUCKETS + 1]) -> Option<[f64; 3]> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let quantile = |q: f64| {
        let rank = q * total as f64;
        let mut below = 0u64;
        for (i, &c) in counts.iter().enumerate() {
            if c > 0 && (below + c) as f64 >= rank {
                let low = if i == 0 { 0.0 } else { setup_bound(i - 1) };
                if i == SETUP_BUCKETS {
                    return low * 1000.0;
                }
                let within = (rank - below as f64) / c as f64;
                return (low + (setup_bound(i) - low) * within) * 1000.0;
            }
            below += c;
        }
        setup_bound(SETUP_BUCKETS) * 1000.0
    };
    Some([quantile(0.5), quantile(0.9), quantile(0.99)])
}

/// The hub's totals now.
pub fn now(hub: &Hub) -> Sample {
    let t = &hub.metrics.tally;
    let live: u64 = hub
        .live
        .snapshot()
        .iter()
        .map(|s| s.bytes_to_device.saturating_add(s.bytes_from_device))
        .sum();
    let mut setup = [0u64; SETUP_BUCKETS + 1];
    for (i, c) in setup.iter_mut().enumerate() {
        *c = t.setup[i].load(Ordering::Relaxed);
    }
    Sample {
        at: device_streams_protocol::sas::unix_now(),
        streams: t.streams.load(Ordering::Relaxed),
        accepted: t.accepted.load(Ordering::Relaxed),
        bytes: t.bytes.load(Ordering::Relaxed).saturating_add(live),
        setup,
        devices: hub.sessions.connected() as u64,
    }
}

/// Samples the hub every [`INTERVAL`], the first at once, until it shuts down.
pub async fn sample_every(hub: Arc<Hub>) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = hub.shutdown.cancelled() => return,
            _ = tick.tick() => hub.history.push(now(&hub)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: u64, streams: u64, bytes: u64, fast: u64, slow: u64) -> Sample {
        let mut setup = [0; SETUP_BUCKETS + 1];
        setup[1] = fast; // 0.5–1 ms
        setup[10] = slow; // 256–512 ms
        Sample {
            at,
            streams,
            accepted: streams,
            bytes,
            setup,
            devices: 3,
        }
    }

    #[test]
    fn points_are_rates_between_samples_and_the_ring_keeps_one_hour() {
        let h = History::default();
        for i in 0..(SAMPLES as u64 + 50) {
            h.push(sample(i * 10, i * 20, i * 1000, i * 98, i * 2));
        }
        let now = sample(SAMPLES as u64 * 10 + 500 + 5, 0, 0, 0, 0);
        let points = h.points(now);
        // 360 intervals between the kept samples, and the live one to `now`.
        assert_eq!(points.len(), SAMPLES);
        let p = points[0];
        assert_eq!((p.streams_per_s, p.bytes_per_s, p.devices), (2.0, 100.0, 3));
        let [p50, p90, p99] = p.setup_ms.unwrap();
        assert!(
            (0.5..=1.0).contains(&p50) && (0.5..=1.0).contains(&p90),
            "{p50} {p90}"
        );
        assert!((256.0..=512.0).contains(&p99), "{p99}");
        // Totals that went down (the live point here) read as nothing happening.
        let live = points[SAMPLES - 1];
        assert_eq!((live.streams_per_s, live.setup_ms), (0.0, None));
    }

    #[test]
    fn a_record_lands_in_its_set_up_bucket() {
        let t = Tally::default();
        let mut r = Record::request("d", "ssh", "p", Outcome::Accepted, "");
        r.setup = Some(Duration::from_millis(3));
        r.bytes_to_device = 5;
        t.record(&r);
        r.setup = Some(Duration::from_secs(60));
        t.record(&r);
        assert_eq!(t.setup[3].load(Ordering::Relaxed), 1); // 2–4 ms
        assert_eq!(t.setup[SETUP_BUCKETS].load(Ordering::Relaxed), 1);
        assert_eq!(t.bytes.load(Ordering::Relaxed), 10);
        let mut counts = [0; SETUP_BUCKETS + 1];
        counts[SETUP_BUCKETS] = 1;
        assert_eq!(percentiles(&counts).unwrap()[0], setup_bound(15) * 1000.0);
    }
}
