//! The herd: many devices connected to one hub, the hub killed, down for an outage, and
//! started again. Each device reconnects exactly as the device proxy does — the SDK's
//! backoff (`protocol::backoff`, 500 ms doubling to the device's maximum, jittered),
//! reset once connected — and the figure is how long after the hub is back each device
//! has its control session again (TLS, WebSocket, CONNECT, SUBSCRIBE), with the rate of
//! attempts the hub saw. That is what picks the device's default maximum backoff, and
//! shows whether the hub keeps handshakes flowing under the herd.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use device_streams::{connector::tls, Connector};
use device_streams_protocol::{backoff::Backoff, Secret};
use tokio::time::Instant;

use crate::{devices, ours::Ours};

/// The device proxy's bound on each step of a connect (its default `--connect-timeout`).
const ATTEMPT_LIMIT: Duration = Duration::from_secs(10);

/// What one run of the herd gives.
pub struct Herd {
    pub devices: usize,
    /// Time from the hub's restart to each device's session, sorted.
    pub back_after: Vec<Duration>,
    /// Devices not back within the limit.
    pub missing: usize,
    /// Connection attempts that failed while the hub was back (timeouts, refusals).
    pub failed_attempts: usize,
}

/// Shared by every simulated device.
struct State {
    connected: AtomicUsize,
    failed_after_return: AtomicUsize,
    /// When the hub came back; `None` before the outage ends.
    hub_back: Mutex<Option<Instant>>,
    back_after: Mutex<Vec<Duration>>,
}

impl State {
    fn hub_back(&self) -> Option<Instant> {
        *self.hub_back.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One device for as long as the run lasts: connect with backoff, hold the session until
/// the hub drops it, start again.
async fn device(
    connector: Connector,
    hostname: String,
    id: String,
    key: Secret,
    max_backoff: Duration,
    state: Arc<State>,
) {
    let mut backoff = Backoff::new(Duration::from_millis(500), max_backoff);
    loop {
        // As the device proxy bounds each handshake: a hub killed mid-handshake must not
        // leave a device waiting for a CONNACK that never comes.
        let attempt = devices::connect_one(&connector, &hostname, &id, &key);
        let Ok(Ok(mut session)) = tokio::time::timeout(ATTEMPT_LIMIT, attempt).await else {
            if state.hub_back().is_some() {
                state.failed_after_return.fetch_add(1, Ordering::Relaxed);
            }
            tokio::time::sleep(backoff.next_delay()).await;
            continue;
        };
        backoff.reset();
        if let Some(back) = state.hub_back() {
            let mut all = state.back_after.lock().unwrap_or_else(|p| p.into_inner());
            all.push(back.elapsed());
        }
        state.connected.fetch_add(1, Ordering::SeqCst);
        // Idle until the hub goes away: then the read ends (EOF or reset).
        while let Ok(Some(_)) = session.read().await {}
        state.connected.fetch_sub(1, Ordering::SeqCst);
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Waits until `cond` holds, checking every 100 ms, for up to `limit`; whether it held.
async fn until(limit: Duration, cond: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !cond() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    true
}

/// Connects all of `ours`' registered idle devices, kills the hub, keeps it down for
/// `outage`, starts it again, and measures the return.
pub async fn run(ours: &mut Ours, outage: Duration, max_backoff: Duration) -> anyhow::Result<Herd> {
    let reg = &ours.registered;
    let n = reg.idle.len();
    let connector = Connector::new(
        tls::client_config(Some(&reg.ca_file))?,
        Duration::from_secs(10),
    );
    let state = Arc::new(State {
        connected: AtomicUsize::new(0),
        failed_after_return: AtomicUsize::new(0),
        hub_back: Mutex::new(None),
        back_after: Mutex::new(Vec::with_capacity(n)),
    });
    let mut tasks = tokio::task::JoinSet::new();
    for (id, key) in &reg.idle {
        let (c, h, s) = (connector.clone(), reg.hostname.clone(), state.clone());
        tasks.spawn(device(c, h, id.clone(), key.clone(), max_backoff, s));
    }
    let all_up = || state.connected.load(Ordering::SeqCst) == n;
    anyhow::ensure!(
        until(Duration::from_secs(600), all_up).await,
        "only {} of {n} devices connected before the outage",
        state.connected.load(Ordering::SeqCst)
    );
    eprintln!("herd: {n} devices connected; killing the hub for {outage:?}");
    ours.kill_hub();
    let all_down = || state.connected.load(Ordering::SeqCst) == 0;
    anyhow::ensure!(
        until(Duration::from_secs(60), all_down).await,
        "devices did not notice the hub's death"
    );
    tokio::time::sleep(outage).await;
    // The clock starts as the hub is started again, so its own start-up counts too and no
    // device that gets in before it is listening for sure goes unmeasured.
    *state.hub_back.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    ours.restart_hub().await?;
    let limit = max_backoff * 2 + Duration::from_secs(60);
    until(limit, all_up).await;
    tasks.abort_all();
    let mut back_after =
        std::mem::take(&mut *state.back_after.lock().unwrap_or_else(|p| p.into_inner()));
    back_after.sort();
    Ok(Herd {
        devices: n,
        missing: n - back_after.len(),
        back_after,
        failed_attempts: state.failed_after_return.load(Ordering::Relaxed),
    })
}

impl Herd {
    /// The `q` quantile (0..=1) of the return times.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let last = self.back_after.len().checked_sub(1)?;
        Some(self.back_after[((last as f64) * q).round() as usize])
    }
}
