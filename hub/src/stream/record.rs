//! A stream's activity record, written exactly once when the stream ends — refused,
//! rejected, timed out, relayed to its end, or dropped because the service hung up —
//! whichever path ended it: [`StreamRecord`] writes itself when it is dropped.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    activity::{Activity, Outcome, Record},
    metrics::Metrics,
};

/// Where records go: the activity log and the metrics. Cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    pub metrics: Arc<Metrics>,
    pub activity: Arc<Activity>,
}

impl Recorder {
    fn write(&self, record: &Record<'_>) {
        self.metrics.on_record(record);
        self.activity.record(record);
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
    device: String,
    stream: String,
    policy: String,
    requested_at: Instant,
    traffic: Option<Traffic>,
    ending: Option<(Outcome, String)>,
    /// What the record says if the stream is dropped before anyone said how it ended.
    if_dropped: &'static str,
}

impl StreamRecord {
    pub fn new(recorder: Recorder, device: &str, stream: &str, policy: &str) -> Self {
        StreamRecord {
            recorder,
            device: device.to_string(),
            stream: stream.to_string(),
            policy: policy.to_string(),
            requested_at: Instant::now(),
            traffic: None,
            ending: None,
            if_dropped: "the service hung up before the device answered",
        }
    }

    pub fn device(&self) -> &str {
        &self.device
    }

    pub fn stream(&self) -> &str {
        &self.stream
    }

    pub fn policy(&self) -> &str {
        &self.policy
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
        let (setup, duration) = self.setup_and_duration();
        let traffic = self.traffic;
        self.recorder.write(&Record {
            setup,
            duration,
            bytes_to_device: traffic.map_or(0, |t| t.bytes_to_device),
            bytes_from_device: traffic.map_or(0, |t| t.bytes_from_device),
            ..Record::request(&self.device, &self.stream, &self.policy, outcome, &detail)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorder(dir: &std::path::Path) -> Recorder {
        Recorder {
            metrics: Arc::default(),
            activity: Arc::new(Activity::open(&dir.join("a.db")).unwrap()),
        }
    }

    #[test]
    fn a_record_is_written_once_whichever_way_the_stream_ends() {
        let dir = tempfile::tempdir().unwrap();
        let rec = recorder(dir.path());
        let mut refused = StreamRecord::new(rec.clone(), "d1", "ssh", "service");
        refused.end(Outcome::Limited, "at the limit");
        drop(refused);
        drop(StreamRecord::new(rec.clone(), "d2", "ssh", "service"));
        let mut relayed = StreamRecord::new(rec.clone(), "d3", "ssh", "service");
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
        let metrics = rec.metrics.render(0, 0);
        for result in ["limited", "failed", "accepted"] {
            let line = format!("stream_hub_streams_total{{result=\"{result}\"}} 1");
            assert!(metrics.contains(&line), "{line} in {metrics}");
        }
        assert!(metrics.contains("stream_hub_relayed_bytes_total{direction=\"to_device\"} 5"));
    }
}
