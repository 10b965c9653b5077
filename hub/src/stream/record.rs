//! A stream's activity record, written exactly once when the stream ends — refused,
//! rejected, timed out, relayed to its end, or dropped because the service hung up —
//! whichever path ended it: [`StreamRecord`] writes itself when it is dropped, into the
//! place in the activity log's queue it reserved when it was opened.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    activity::{Activity, Outcome, Record, Reserved},
    metrics::Metrics,
};

/// Where records go: the activity log and the metrics. Cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    pub metrics: Arc<Metrics>,
    pub activity: Arc<Activity>,
}

impl Recorder {
    /// A record for a new stream, once the activity log has room to take it.
    pub async fn open(&self, device: &str, stream: &str, policy: &str) -> StreamRecord {
        let place = self.activity.reserve().await;
        StreamRecord {
            recorder: self.clone(),
            place,
            device: device.to_string(),
            stream: stream.to_string(),
            policy: policy.to_string(),
            requested_at: Instant::now(),
            traffic: None,
            ending: None,
            path: None,
            early_to_device: 0,
            if_dropped: "the service hung up before the device answered",
        }
    }
}

/// Bytes relayed each way once the stream was paired, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct Traffic {
    pub paired_at: Instant,
    pub bytes_to_device: u64,
    pub bytes_from_device: u64,
}

/// One stream request's record, from the moment its caller is known until it ends.
pub struct StreamRecord {
    recorder: Recorder,
    place: Option<Reserved>,
    device: String,
    stream: String,
    policy: String,
    requested_at: Instant,
    traffic: Option<Traffic>,
    ending: Option<(Outcome, String)>,
    /// How the stream was opened, when not Azure's way (the fast path's route).
    path: Option<&'static str>,
    /// Bytes the service sent ahead of the device's answer (the fast path), which the
    /// relay's counts do not see.
    early_to_device: u64,
    /// What the record says if the stream is dropped before anyone said how it ended.
    if_dropped: &'static str,
}

impl StreamRecord {
    pub fn device(&self) -> &str {
        &self.device
    }

    pub fn stream(&self) -> &str {
        &self.stream
    }

    pub fn policy(&self) -> &str {
        &self.policy
    }

    /// The stream came on the fast path and reached the device by `route`: the record
    /// says so after its cause.
    pub fn fast_path(&mut self, route: &'static str) {
        self.path = Some(route);
    }

    /// The service's bytes passed to the device ahead of its answer (the fast path).
    pub fn early_to_device(&mut self, bytes: u64) {
        self.early_to_device += bytes;
    }

    /// The device accepted: from now on a stream that is dropped unpaired timed out.
    pub fn accepted(&mut self) {
        self.if_dropped = "the stream ended before both sides reached the streaming endpoint";
    }

    /// How the stream ended; the record is written when `self` drops (at once, if the
    /// caller drops it here).
    pub fn end(&mut self, outcome: Outcome, detail: impl Into<String>) {
        self.ending = Some((outcome, detail.into()));
    }

    /// An accepted stream that was relayed and has now ended.
    pub fn relayed(&mut self, traffic: Traffic, detail: impl Into<String>) {
        self.traffic = Some(traffic);
        self.end(Outcome::Accepted, detail);
    }

    fn setup_and_duration(&self) -> (Option<Duration>, Option<Duration>) {
        match self.traffic {
            Some(t) => (
                Some(t.paired_at - self.requested_at),
                Some(t.paired_at.elapsed()),
            ),
            None => (None, None),
        }
    }
}

impl Drop for StreamRecord {
    fn drop(&mut self) {
        let (outcome, detail) = self
            .ending
            .take()
            .unwrap_or_else(|| (Outcome::Failed, self.if_dropped.to_string()));
        let detail = match self.path {
            Some(route) => format!("{detail} (fast path, {route})"),
            None => detail,
        };
        let (setup, duration) = self.setup_and_duration();
        let traffic = self.traffic;
        let record = Record {
            setup,
            duration,
            bytes_to_device: traffic.map_or(0, |t| t.bytes_to_device) + self.early_to_device,
            bytes_from_device: traffic.map_or(0, |t| t.bytes_from_device),
            ..Record::request(&self.device, &self.stream, &self.policy, outcome, &detail)
        };
        self.recorder.metrics.on_record(&record);
        Activity::record(self.place.take(), &record);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn recorder(dir: &std::path::Path) -> Recorder {
        let db = dir.join("a.db");
        Recorder {
            metrics: Arc::default(),
            activity: Arc::new(Activity::open(&db, 16, Default::default()).unwrap()),
        }
    }

    #[tokio::test]
    async fn a_record_is_written_once_whichever_way_the_stream_ends() {
        let dir = tempfile::tempdir().unwrap();
        let rec = recorder(dir.path());
        let mut refused = rec.open("d1", "ssh", "service").await;
        refused.end(Outcome::Limited, "at the limit");
        drop(refused);
        drop(rec.open("d2", "ssh", "service").await);
        let mut relayed = rec.open("d3", "ssh", "service").await;
        relayed.accepted();
        relayed.relayed(
            Traffic {
                paired_at: Instant::now(),
                bytes_to_device: 5,
                bytes_from_device: 7,
            },
            "closed by the service",
        );
        drop(relayed);
        let metrics = rec.metrics.render(Default::default());
        for result in ["limited", "failed", "accepted"] {
            let line = format!("stream_hub_streams_total{{result=\"{result}\"}} 1");
            assert!(metrics.contains(&line), "{line} in {metrics}");
        }
        assert!(metrics.contains("stream_hub_relayed_bytes_total{direction=\"to_device\"} 5"));
    }
}
