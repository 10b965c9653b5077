//! The dashboard's read-only pages: each gathers what it shows ([`super::fleet`], the
//! registry, [`super::history`]) and hands it to the HTML in [`super::pages`] and
//! [`super::charts`].

use std::{collections::HashMap, time::Duration};

use device_streams_protocol::sas::unix_now;
use http::{Response, StatusCode};

use super::{
    auth::Session,
    charts, fleet, history,
    pages::{self, Nav, Viewer},
    reply::{html, message, see_other, unavailable},
    tables, Served,
};
use crate::{activity::unix_ms, http::Body, live::device_states, Hub};

/// Devices on one page of `/`: enough to scroll, few enough to render in milliseconds.
pub const PAGE_SIZE: usize = 500;

/// Activity records shown at most, newest first.
const MAX_ACTIVITY_ROWS: usize = 1000;

fn page(
    title: &str,
    nav: Nav,
    viewer: &Viewer<'_>,
    refresh: Option<u32>,
    body: &str,
) -> Response<Body> {
    html(
        StatusCode::OK,
        &pages::layout(title, nav, viewer, refresh, body),
    )
}

fn filter(query: &HashMap<String, String>) -> tables::DeviceFilter {
    tables::DeviceFilter {
        q: query.get("q").cloned().unwrap_or_default(),
        state: query
            .get("state")
            .filter(|s| tables::DEVICE_STATES.contains(&s.as_str()))
            .cloned()
            .unwrap_or_else(|| "all".into()),
        page: query.get("page").and_then(|p| p.parse().ok()).unwrap_or(0),
    }
}

pub async fn devices(
    hub: &Hub,
    served: Served,
    query: &HashMap<String, String>,
    viewer: &Viewer<'_>,
) -> Response<Body> {
    let filter = filter(query);
    // On a blocking thread: 10,000 rows of SQLite are not work for the runtime that
    // relays streams.
    let registry = hub.registry.clone();
    let read = move || {
        anyhow::Ok((
            registry.devices()?,
            device_states(&registry)?,
            registry.device_auths()?,
        ))
    };
    let loaded = tokio::task::spawn_blocking(read).await;
    let (list, states, auths) = match loaded.map_err(anyhow::Error::from).and_then(|r| r) {
        Ok(l) => l,
        Err(e) => return unavailable(served.base, &format!("{e:#}")),
    };
    let presence = fleet::presence(hub);
    // Open streams as /streams shows them this instant (every node's, in a cluster).
    let (streams, _) = fleet::streams(hub).await;
    let mut open: HashMap<&str, usize> = HashMap::new();
    for (_, s) in &streams {
        *open.entry(s.device_id.as_str()).or_default() += 1;
    }
    let needle = filter.q.to_lowercase();
    let rows: Vec<tables::DeviceRow<'_>> = list
        .iter()
        .filter(|d| needle.is_empty() || d.id.to_lowercase().contains(&needle))
        .map(|d| {
            let here = presence.get(&d.id);
            let state = states.get(&d.id).copied().unwrap_or_default();
            tables::DeviceRow {
                id: &d.id,
                enabled: d.enabled,
                online: here.is_some_and(|p| p.online),
                node: here.and_then(|p| p.node.as_deref()),
                last_seen: state
                    .last_seen
                    .max(here.and_then(|p| p.at))
                    .or(d.last_connected_at),
                open_streams: open.get(d.id.as_str()).copied().unwrap_or(0),
                auth: auths.get(&d.id).map(|a| a.kind()).unwrap_or("sas"),
            }
        })
        .filter(|r| match filter.state.as_str() {
            "online" => r.online,
            "offline" => !r.online,
            "enabled" => r.enabled,
            "disabled" => !r.enabled,
            _ => true,
        })
        .collect();
    let total = rows.len();
    let from = filter.page.saturating_mul(PAGE_SIZE).min(total);
    let shown = &rows[from..from.saturating_add(PAGE_SIZE).min(total)];
    let body = tables::devices(shown, total, PAGE_SIZE, &filter, viewer, unix_now());
    page("Devices", Nav::Devices, viewer, None, &body)
}

pub async fn streams(hub: &Hub, viewer: &Viewer<'_>) -> Response<Body> {
    let (rows, silent) = fleet::streams(hub).await;
    let now = unix_ms(std::time::SystemTime::now());
    let body = tables::streams(&rows, &silent, viewer, now);
    page("Streams", Nav::Streams, viewer, Some(2), &body)
}

pub async fn activity(
    hub: &Hub,
    served: Served,
    query: &HashMap<String, String>,
    viewer: &Viewer<'_>,
) -> Response<Body> {
    let text = |k: &str| query.get(k).map(|v| v.trim().to_string());
    let mut filter = tables::ActivityFilter {
        device: text("device").unwrap_or_default(),
        result: query.get("result").cloned().unwrap_or_else(|| "all".into()),
        since: text("since")
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "1h".into()),
    };
    let mut error = None;
    let since = match humantime::parse_duration(&filter.since) {
        Ok(d) => d,
        Err(e) => {
            error = Some(format!(
                "'since' is not a duration ({e}); showing the last hour"
            ));
            filter.since = "1h".into();
            Duration::from_secs(3600)
        }
    };
    let since_ms = unix_ms(std::time::SystemTime::now()).saturating_sub(since.as_millis() as u64);
    let device = Some(filter.device.as_str()).filter(|d| !d.is_empty());
    let entries = match fleet::activity(hub, device, since_ms).await {
        Ok(e) => e,
        Err(e) => return unavailable(served.base, &format!("{e:#}")),
    };
    let matching: Vec<_> = entries
        .into_iter()
        .rev()
        .filter(|e| filter.result == "all" || e.result == filter.result)
        .collect();
    let shown = &matching[..matching.len().min(MAX_ACTIVITY_ROWS)];
    let body = tables::activity(
        served.base,
        shown,
        matching.len(),
        &filter,
        error.as_deref(),
    );
    page("Activity", Nav::Activity, viewer, None, &body)
}

/// `/charts`: reloads itself every sample interval, so each reload brings a new point.
pub fn charts(hub: &Hub, viewer: &Viewer<'_>) -> Response<Body> {
    let now = history::now(hub);
    let points = hub.history.points(now);
    let body = charts::page(&points, now.at, fleet::node_id(hub));
    let every = history::INTERVAL.as_secs() as u32;
    page("Charts", Nav::Charts, viewer, Some(every), &body)
}

/// `/rotated`: the connection string a rotation left in `session`, this once; a reload
/// finds nothing and says so.
pub fn rotated(
    hub: &Hub,
    served: Served,
    session: Option<(&str, &Session)>,
    viewer: &Viewer<'_>,
) -> Response<Body> {
    let Some((sid, _)) = session else {
        return see_other(&format!("{}/login", served.base), None);
    };
    match hub.dashboard.take_flash(sid) {
        Some(flash) => {
            let body = pages::rotated(served.base, &flash.device, flash.connection_string.expose());
            page("New key", Nav::Devices, viewer, None, &body)
        }
        None => message(
            served.base,
            StatusCode::GONE,
            "Shown once",
            "A new connection string is shown only once, right after the rotation. Rotate again if it was lost.",
        ),
    }
}
