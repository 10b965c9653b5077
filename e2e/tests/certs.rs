//! The hub's certificate changes under a running hub: `stream-hub cert` re-issues it for
//! new names, and the hub serves it within seconds — the same CA, no restart.

use std::{sync::Arc, time::Duration};

use device_streams_protocol::tls::{load_certs, provider};
use e2e::{
    fault::{eventually_async, HubProcess},
    hub_cli,
};
use rustls::{pki_types::ServerName, ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Whether a TLS handshake with the hub, asking for `name` and trusting only the hub's
/// `ca.pem`, succeeds.
async fn hub_is_trusted_as(hub: &HubProcess, name: &str) -> bool {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(&hub.dir.join("ca.pem")).unwrap() {
        roots.add(cert).unwrap();
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let Ok(tcp) = TcpStream::connect(hub.listen()).await else {
        return false;
    };
    let name = ServerName::try_from(name.to_string()).unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reissued_certificate_is_served_without_a_restart() {
    let hub = HubProcess::init();
    let _serving = hub.serve("1s");
    let up = eventually_async(Duration::from_secs(10), || {
        hub_is_trusted_as(&hub, "localhost")
    });
    assert!(up.await, "the hub did not come up");
    assert!(!hub_is_trusted_as(&hub, "hub.example.test").await);

    let out = hub_cli(&hub.dir, &["cert", "--name", "hub.example.test"]);
    assert!(out.contains("hub.example.test"), "{out}");
    let reloaded = eventually_async(Duration::from_secs(10), || {
        hub_is_trusted_as(&hub, "hub.example.test")
    });
    assert!(
        reloaded.await,
        "the running hub kept serving the old certificate"
    );
    // The old names are still covered, and the same ca.pem vouches for both.
    assert!(hub_is_trusted_as(&hub, "localhost").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_of_the_admin_s_own_is_served_and_reloaded_when_replaced() {
    let hub = HubProcess::init();
    // The admin's certificate files, elsewhere on disk (as an ACME client's would be),
    // for a name the data directory's own certificate does not cover.
    let own = tempfile::tempdir().unwrap();
    let (cert, key) = (
        own.path().join("fullchain.pem"),
        own.path().join("privkey.pem"),
    );
    let take_over = || {
        std::fs::copy(hub.dir.join("server.pem"), &cert).unwrap();
        std::fs::copy(hub.dir.join("server-key.pem"), &key).unwrap();
    };
    hub_cli(&hub.dir, &["cert", "--name", "admin.example.test"]);
    take_over();
    hub_cli(&hub.dir, &["cert"]);
    let (c, k) = (cert.display().to_string(), key.display().to_string());
    let _serving = hub.serve_with(&["--tls-cert", &c, "--tls-key", &k]);
    let up = eventually_async(Duration::from_secs(10), || {
        hub_is_trusted_as(&hub, "admin.example.test")
    });
    assert!(up.await, "the hub does not serve --tls-cert");

    // A renewal replaces the admin's files: the hub serves the new certificate.
    hub_cli(&hub.dir, &["cert", "--name", "renewed.example.test"]);
    take_over();
    let reloaded = eventually_async(Duration::from_secs(10), || {
        hub_is_trusted_as(&hub, "renewed.example.test")
    });
    assert!(
        reloaded.await,
        "the hub kept serving the replaced certificate"
    );
}
