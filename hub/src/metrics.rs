//! Prometheus metrics (`GET /metrics`, text format) and what feeds them.

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::{Metric, Registry},
};

use crate::{activity::Record, dashboard::history::Tally};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

/// What the gauges say, read from the hub at scrape time.
#[derive(Debug, Default, Clone, Copy)]
pub struct Gauges {
    pub connected_devices: usize,
    pub open_streams: usize,
    pub unauthenticated: usize,
}

/// Why a connection was closed at accept.
#[derive(Debug, Clone, Copy)]
pub enum Refused {
    MaxConnections,
    Unauthenticated,
    UnauthenticatedAddress,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
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
    unauthenticated: Gauge,
    streams: Family<ResultLabel, Counter>,
    bytes: Family<DirectionLabel, Counter>,
    setup_seconds: Histogram,
    auth_failures: Family<KindLabel, Counter>,
    connections: Counter,
    refused: Family<ReasonLabel, Counter>,
    registry_changes: Counter,
    fast_path: Family<RouteLabel, Counter>,
    /// The same records' totals, for the dashboard's charts.
    pub(crate) tally: Tally,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::with_prefix("stream_hub");
        Metrics {
            unauthenticated: registered(
                &mut r,
                "unauthenticated_connections",
                "Connections that have not authenticated yet",
            ),
            refused: registered(
                &mut r,
                "connections_refused",
                "Connections closed at accept, by the limit they were over",
            ),
            connected_devices: registered(
                &mut r,
                "connected_devices",
                "Devices with an open control connection",
            ),
            open_streams: registered(&mut r, "open_streams", "Streams pending or open"),
            streams: registered(&mut r, "streams", "Stream requests by result"),
            bytes: registered(
                &mut r,
                "relayed_bytes",
                "Bytes relayed on streams, by direction",
            ),
            // 0.5 ms .. ~16 s: loopback set-up to a slow device on a bad link.
            setup_seconds: registered_as(
                &mut r,
                "stream_setup_seconds",
                "From stream request to both sides paired",
                Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            ),
            auth_failures: registered(&mut r, "auth_failures", "Failed authentications by kind"),
            connections: registered(
                &mut r,
                "connections",
                "TCP connections accepted on the main port",
            ),
            registry_changes: registered(
                &mut r,
                "registry_changes",
                "Registry changes (from any process) this hub has applied to live sessions",
            ),
                        fast_path: registered(
                &mut r,
                "fast_path_streams",
                "Streams opened on a warm fast-path connection, by how the device was reached (standby, mqtt)",
            ),
            registry: r,
            tally: Tally::default(),
        }
    }
}

/// A new metric of its kind's default, registered under `name`.
fn registered<M: Metric + Clone + Default>(registry: &mut Registry, name: &str, help: &str) -> M {
    registered_as(registry, name, help, M::default())
}

/// `metric`, registered under `name`; the clone kept shares its value with the registry's.
fn registered_as<M: Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    registry.register(name, help, metric.clone());
    metric
}

impl Metrics {
    pub fn on_record(&self, r: &Record<'_>) {
        self.tally.record(r);
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

    pub fn connection_refused(&self, why: Refused) {
        let reason = match why {
            Refused::MaxConnections => "max_connections",
            Refused::Unauthenticated => "unauthenticated",
            Refused::UnauthenticatedAddress => "unauthenticated_per_address",
        };
        self.refused.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// A stream opened on the fast path, reaching the device by `route`.
    pub fn fast_path(&self, route: &'static str) {
        self.fast_path.get_or_create(&RouteLabel { route }).inc();
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
    /// The gauges read at scrape time, by name.
    pub fn render(&self, gauges: Gauges) -> String {
        self.connected_devices.set(gauges.connected_devices as i64);
        self.open_streams.set(gauges.open_streams as i64);
        self.unauthenticated.set(gauges.unauthenticated as i64);
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
        let text = m.render(Gauges {
            connected_devices: 3,
            open_streams: 1,
            unauthenticated: 0,
        });
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
