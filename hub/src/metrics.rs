//! Prometheus metrics (`GET /metrics`, text format) and what feeds them.

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};

use crate::activity::Record;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

/// Who failed to authenticate.
#[derive(Debug, Clone, Copy)]
pub enum AuthKind {
    Device,
    Service,
    StreamToken,
}

pub struct Metrics {
    registry: Registry,
    connected_devices: Gauge,
    open_streams: Gauge,
    streams: Family<ResultLabel, Counter>,
    bytes: Family<DirectionLabel, Counter>,
    setup_seconds: Histogram,
    auth_failures: Family<KindLabel, Counter>,
    connections: Counter,
    registry_changes: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("stream_hub");
        let connected_devices = Gauge::default();
        let open_streams = Gauge::default();
        let streams = Family::<ResultLabel, Counter>::default();
        let bytes = Family::<DirectionLabel, Counter>::default();
        // 0.5 ms .. ~16 s: loopback set-up to a slow device on a bad link.
        let setup_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        let auth_failures = Family::<KindLabel, Counter>::default();
        let connections = Counter::default();
        let registry_changes = Counter::default();
        registry.register(
            "connected_devices",
            "Devices with an open control connection",
            connected_devices.clone(),
        );
        registry.register(
            "open_streams",
            "Streams pending or open",
            open_streams.clone(),
        );
        registry.register("streams", "Stream requests by result", streams.clone());
        registry.register(
            "relayed_bytes",
            "Bytes relayed on streams, by direction",
            bytes.clone(),
        );
        registry.register(
            "stream_setup_seconds",
            "From stream request to both sides paired",
            setup_seconds.clone(),
        );
        registry.register(
            "auth_failures",
            "Failed authentications by kind",
            auth_failures.clone(),
        );
        registry.register(
            "connections",
            "TCP connections accepted on the main port",
            connections.clone(),
        );
        registry.register(
            "registry_changes",
            "Registry changes (from any process) this hub has applied to live sessions",
            registry_changes.clone(),
        );
        Metrics {
            registry,
            connected_devices,
            open_streams,
            streams,
            bytes,
            setup_seconds,
            auth_failures,
            connections,
            registry_changes,
        }
    }
}

impl Metrics {
    pub fn on_record(&self, r: &Record<'_>) {
        self.streams
            .get_or_create(&ResultLabel {
                result: r.outcome.name(),
            })
            .inc();
        self.bytes
            .get_or_create(&DirectionLabel {
                direction: "to_device",
            })
            .inc_by(r.bytes_to_device);
        self.bytes
            .get_or_create(&DirectionLabel {
                direction: "from_device",
            })
            .inc_by(r.bytes_from_device);
        if let Some(setup) = r.setup {
            self.setup_seconds.observe(setup.as_secs_f64());
        }
    }

    pub fn registry_changed(&self) {
        self.registry_changes.inc();
    }

    pub fn connection_accepted(&self) {
        self.connections.inc();
    }

    pub fn auth_failure(&self, kind: AuthKind) {
        let kind = match kind {
            AuthKind::Device => "device",
            AuthKind::Service => "service",
            AuthKind::StreamToken => "stream_token",
        };
        self.auth_failures.get_or_create(&KindLabel { kind }).inc();
    }

    /// The text exposition, with the gauges read at scrape time.
    pub fn render(&self, connected_devices: usize, open_streams: usize) -> String {
        self.connected_devices.set(connected_devices as i64);
        self.open_streams.set(open_streams as i64);
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activity::Outcome;

    #[test]
    fn renders_counters_gauges_and_histogram() {
        let m = Metrics::default();
        m.on_record(&Record {
            setup: Some(std::time::Duration::from_millis(2)),
            bytes_to_device: 7,
            ..Record::request("d", "ssh", "p", Outcome::Accepted, "")
        });
        m.auth_failure(AuthKind::Service);
        let text = m.render(3, 1);
        for line in [
            "stream_hub_connected_devices 3",
            "stream_hub_open_streams 1",
            "stream_hub_streams_total{result=\"accepted\"} 1",
            "stream_hub_relayed_bytes_total{direction=\"to_device\"} 7",
            "stream_hub_auth_failures_total{kind=\"service\"} 1",
            "stream_hub_stream_setup_seconds_count 1",
        ] {
            assert!(text.contains(line), "missing {line} in:\n{text}");
        }
    }
}
