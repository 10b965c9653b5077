//! The two proxies' settings as plain, mutable test values, turned into the SDK's clients
//! and the proxies' configs: tests change one field (a wrong key, a short timeout) and
//! run the real thing with it.

use std::{path::Path, time::Duration};

use device_local_proxy::{Target, Targets};
use device_streams::{
    connector::{proxy::ProxySettings, tls::client_config},
    device::MqttTransport,
    protocol::connection_string::{DeviceConnectionString, ServiceConnectionString},
    service::Granted,
    Connector, DeviceClient, Route, ServiceClient, Stream, StreamError,
};
use tokio_util::sync::CancellationToken;

use crate::Running;

/// A connector trusting `ca_file` that dials directly whatever the developer's
/// `HTTPS_PROXY` says: the tests reach only loopback (proxy tests set one explicitly).
pub fn connector(ca_file: &Path) -> Connector {
    Connector::new(
        client_config(Some(ca_file)).expect("client tls"),
        Duration::from_secs(5),
    )
    .with_proxy(ProxySettings::default())
}

/// What a service proxy (or an SDK program) is told: which hub, which route, what timeouts.
#[derive(Clone)]
pub struct ServiceConfig {
    pub connection: ServiceConnectionString,
    pub connector: Connector,
    pub device_id: String,
    /// A module identity of the device to stream to instead of the device itself.
    pub module_id: Option<String>,
    pub stream_name: String,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub token_ttl: Duration,
    pub max_connections: usize,
    pub shutdown_grace: Duration,
    /// Warm fast-path connections to keep (the library's default: none).
    pub warm: usize,
}

impl ServiceConfig {
    pub fn new(
        connection: ServiceConnectionString,
        connector: Connector,
        device: &str,
        stream: &str,
    ) -> Self {
        ServiceConfig {
            connection,
            connector,
            device_id: device.to_string(),
            module_id: None,
            stream_name: stream.to_string(),
            connect_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(10),
            token_ttl: Duration::from_secs(300),
            max_connections: 256,
            shutdown_grace: Duration::from_secs(2),
            warm: 0,
        }
    }

    pub fn client(&self) -> ServiceClient {
        ServiceClient::builder(self.connection.clone())
            .connector(self.connector.clone())
            .timeout(self.connect_timeout)
            .response_timeout(self.response_timeout)
            .token_ttl(self.token_ttl)
            .warm(self.warm)
            .build()
            .expect("service client")
    }

    pub fn route(&self) -> Route {
        let route = Route::new(&self.device_id, &self.stream_name);
        match &self.module_id {
            Some(m) => route.with_module(m),
            None => route,
        }
    }

    /// The service proxy's own config for these settings.
    pub fn proxy(&self) -> service_local_proxy::Config {
        service_local_proxy::Config {
            client: self.client(),
            max_connections: self.max_connections,
            shutdown_grace: self.shutdown_grace,
        }
    }
}

/// Asks the hub for a stream and opens it, as the service proxy does for a connection.
pub async fn open_stream(config: &ServiceConfig) -> Result<Stream, StreamError> {
    config.client().open(&config.route()).await
}

/// Only asks the hub for a stream (Azure's REST call): where and with which token to connect.
pub async fn request_stream(config: &ServiceConfig) -> Result<Granted, StreamError> {
    config.client().request(&config.route()).await
}

/// What a device proxy is told.
pub struct DeviceConfig {
    pub connection: DeviceConnectionString,
    pub connector: Connector,
    pub transport: MqttTransport,
    pub map: Vec<String>,
    pub target_timeout: Duration,
    pub keep_alive: Duration,
    pub token_ttl: Duration,
    pub max_streams: usize,
    pub shutdown_grace: Duration,
    pub max_backoff: Duration,
    /// Standby fast-path connections to keep (the library's default: one).
    pub standby: usize,
}

pub fn device_config(
    connection: DeviceConnectionString,
    connector: Connector,
    map: &[&str],
) -> DeviceConfig {
    DeviceConfig {
        connection,
        connector,
        transport: MqttTransport::default(),
        map: map.iter().map(|m| m.to_string()).collect(),
        target_timeout: Duration::from_secs(2),
        keep_alive: Duration::from_secs(30),
        token_ttl: Duration::from_secs(3600),
        max_streams: 100,
        shutdown_grace: Duration::from_secs(2),
        max_backoff: Duration::from_secs(2),
        standby: device_streams::device::defaults::STANDBY,
    }
}

impl DeviceConfig {
    /// The device proxy's own config for these settings.
    pub fn proxy(self) -> device_local_proxy::Config {
        let targets: Vec<Target> = self
            .map
            .iter()
            .map(|m| m.parse().expect("map entry"))
            .collect();
        let client = DeviceClient::builder(self.connection)
            .connector(self.connector)
            .transport(self.transport)
            .keep_alive(self.keep_alive)
            .token_ttl(self.token_ttl)
            .max_backoff(self.max_backoff)
            .standby(self.standby)
            .build()
            .expect("device client");
        device_local_proxy::Config {
            client,
            targets: Targets::new(targets).expect("targets"),
            target_timeout: self.target_timeout,
            max_streams: self.max_streams,
            shutdown_grace: self.shutdown_grace,
            reload_targets: None,
        }
    }
}

/// Runs a device proxy as a task of this test.
pub fn spawn_device(config: DeviceConfig) -> Running {
    let cancel = CancellationToken::new();
    let task = tokio::spawn(device_local_proxy::run(config.proxy(), cancel.clone()));
    Running { cancel, task }
}
