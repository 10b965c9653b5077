//! The activity log, category DeviceStreams: one record per stream request, emitted as a
//! structured tracing event (target `activity`) so it can be routed and queried.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Rejected,
    Timeout,
    DeviceOffline,
    Unauthorized,
    Limited,
    Failed,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Rejected => "rejected",
            Outcome::Timeout => "timeout",
            Outcome::DeviceOffline => "device-offline",
            Outcome::Unauthorized => "unauthorized",
            Outcome::Limited => "limited",
            Outcome::Failed => "failed",
        }
    }
}

/// One stream request's record.
#[derive(Debug, Clone)]
pub struct Record<'a> {
    pub device: &'a str,
    pub stream: &'a str,
    pub policy: &'a str,
    pub outcome: Outcome,
    pub setup: Option<Duration>,
    pub duration: Option<Duration>,
    pub bytes_to_device: u64,
    pub bytes_from_device: u64,
    pub detail: &'a str,
}

impl<'a> Record<'a> {
    pub fn request(
        device: &'a str,
        stream: &'a str,
        policy: &'a str,
        outcome: Outcome,
        detail: &'a str,
    ) -> Self {
        Record {
            device,
            stream,
            policy,
            outcome,
            setup: None,
            duration: None,
            bytes_to_device: 0,
            bytes_from_device: 0,
            detail,
        }
    }
}

pub fn record(r: &Record<'_>) {
    let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
    tracing::info!(
        target: "activity",
        category = "DeviceStreams",
        device = r.device,
        stream = r.stream,
        policy = r.policy,
        result = r.outcome.name(),
        setup_ms = ms(r.setup),
        duration_ms = ms(r.duration),
        bytes_to_device = r.bytes_to_device,
        bytes_from_device = r.bytes_from_device,
        detail = r.detail,
        "stream {}", r.outcome.name()
    );
}
