//! The dashboard's three lists as HTML tables — devices, open streams, the activity log —
//! with their filter forms, paging and per-row action buttons.
//!
//! Every value from outside (device ids, stream names, policy names, a device's rejection
//! reason in the activity detail) goes through [`esc`].

use std::{fmt::Write, time::Duration};

use super::pages::{age, esc, query_value, time, Viewer};
use crate::{activity::Entry, live::StreamRow};

/// One row of the devices page.
pub struct DeviceRow<'a> {
    pub id: &'a str,
    pub enabled: bool,
    pub online: bool,
    /// The cluster node holding its session, in a cluster.
    pub node: Option<&'a str>,
    /// Unix seconds.
    pub last_seen: Option<u64>,
    pub open_streams: usize,
    pub auth: &'static str,
}

/// The devices page's filter, as its GET form sends it.
#[derive(Default)]
pub struct DeviceFilter {
    pub q: String,
    /// `all`, `online`, `offline`, `enabled`, `disabled`.
    pub state: String,
    pub page: usize,
}

pub const DEVICE_STATES: [&str; 5] = ["all", "online", "offline", "enabled", "disabled"];

fn select(name: &str, label: &str, options: &[&str], chosen: &str) -> String {
    let mut s = format!(r#"<label>{label}<select name="{name}">"#);
    for o in options {
        let sel = if *o == chosen { " selected" } else { "" };
        let _ = write!(s, r#"<option value="{0}"{sel}>{0}</option>"#, esc(o));
    }
    s.push_str("</select></label>");
    s
}

/// `/`: the devices matching `filter`, `total` of them, this page's `rows`.
pub fn devices(
    rows: &[DeviceRow<'_>],
    total: usize,
    page_size: usize,
    filter: &DeviceFilter,
    viewer: &Viewer<'_>,
    now: u64,
) -> String {
    let mut b = String::with_capacity(256 + rows.len() * 400);
    b.push_str("<h1>Devices</h1>");
    let _ = write!(
        b,
        r#"<form class="filter" method="get" action="{}/" role="search"><label>Device id contains<input type="search" name="q" value="{}"></label>{}<button type="submit">Filter</button></form>"#,
        viewer.base,
        esc(&filter.q),
        select("state", "Show", &DEVICE_STATES, &filter.state)
    );
    let first = filter.page.saturating_mul(page_size);
    let _ = write!(
        b,
        r#"<table id="devices"><caption>{total} device(s){}</caption><thead><tr><th scope="col">Device</th><th scope="col">Connection</th><th scope="col">Status</th><th scope="col">Last seen</th><th scope="col" class="num">Open streams</th><th scope="col">Authentication</th>{}</tr></thead><tbody>"#,
        match total > page_size {
            true => format!(
                ", {}–{} shown",
                first.saturating_add(1),
                first.saturating_add(rows.len())
            ),
            false => String::new(),
        },
        if viewer.csrf.is_some() {
            r#"<th scope="col">Actions</th>"#
        } else {
            ""
        }
    );
    for d in rows {
        device_row(&mut b, d, viewer, now);
    }
    b.push_str("</tbody></table>");
    b.push_str(&pager(total, page_size, filter, viewer.base));
    b
}

/// One device's row, with its action buttons when the viewer may act.
fn device_row(b: &mut String, d: &DeviceRow<'_>, viewer: &Viewer<'_>, now: u64) {
    let id = esc(d.id);
    let connection = match (d.online, d.node) {
        (true, Some(node)) => format!(
            r#"<span class="online">online</span> <span class="node">on {}</span>"#,
            esc(node)
        ),
        (true, None) => r#"<span class="online">online</span>"#.to_string(),
        (false, _) => r#"<span class="offline">offline</span>"#.to_string(),
    };
    let status = match d.enabled {
        true => "enabled",
        false => r#"<span class="disabled">disabled</span>"#,
    };
    let seen = match (d.online, d.last_seen) {
        (true, _) => "connected now".to_string(),
        (false, Some(t)) => format!("{} ago", age(Duration::from_secs(now.saturating_sub(t)))),
        (false, None) => "never".to_string(),
    };
    let _ = write!(
        b,
        r#"<tr data-device="{id}"><th scope="row">{id}</th><td>{connection}</td><td>{status}</td><td>{seen}</td><td class="num">{}</td><td>{}</td>"#,
        d.open_streams, d.auth
    );
    if viewer.csrf.is_some() {
        b.push_str("<td>");
        let (action, label) = match d.enabled {
            true => ("/devices/disable", "Disable"),
            false => ("/devices/enable", "Enable"),
        };
        b.push_str(&action_form(
            action,
            &[("id", d.id)],
            &format!("{label} {}", d.id),
            label,
            viewer,
        ));
        if d.auth == "sas" {
            b.push_str(&action_form(
                "/devices/rotate-key",
                &[("id", d.id), ("key", "primary")],
                &format!("Rotate the primary key of {}", d.id),
                "Rotate key",
                viewer,
            ));
        }
        b.push_str("</td>");
    }
    b.push_str("</tr>");
}

fn pager(total: usize, page_size: usize, filter: &DeviceFilter, base: &str) -> String {
    if total <= page_size {
        return String::new();
    }
    let link = |page: usize, label: &str| {
        format!(
            r#"<a href="{base}/?q={}&amp;state={}&amp;page={page}">{label}</a>"#,
            query_value(&filter.q),
            query_value(&filter.state)
        )
    };
    let mut s = r#"<nav class="pager" aria-label="Pages">"#.to_string();
    if filter.page > 0 {
        s.push_str(&link(filter.page - 1, "Previous page"));
    }
    if filter.page.saturating_add(1).saturating_mul(page_size) < total {
        s.push_str(&link(filter.page + 1, "Next page"));
    }
    s.push_str("</nav>");
    s
}

/// A one-button POST form carrying `fields` and the session's CSRF token.
fn action_form(
    action: &str,
    fields: &[(&str, &str)],
    label: &str,
    button: &str,
    viewer: &Viewer<'_>,
) -> String {
    let mut s = format!(
        r#"<form method="post" action="{}{action}">{}"#,
        viewer.base,
        viewer.csrf_field()
    );
    for (name, value) in fields {
        let _ = write!(
            s,
            r#"<input type="hidden" name="{name}" value="{}">"#,
            esc(value)
        );
    }
    let _ = write!(
        s,
        r#"<button type="submit" aria-label="{}">{button}</button></form>"#,
        esc(label)
    );
    s
}

/// `/streams`: the open streams (each with its node in a cluster), refreshed by the page
/// every 2 s; `silent` names the nodes that did not answer in time.
pub fn streams(
    rows: &[(Option<String>, StreamRow)],
    silent: &[String],
    viewer: &Viewer<'_>,
    now_ms: u64,
) -> String {
    let mut b = String::from("<h1>Open streams</h1>");
    if !silent.is_empty() {
        let names: Vec<String> = silent.iter().map(|n| esc(n)).collect();
        let _ = write!(
            b,
            r#"<p class="error" role="alert">Not shown: the streams of node(s) {}, which did not answer in time.</p>"#,
            names.join(", ")
        );
    }
    let clustered = rows.iter().any(|(node, _)| node.is_some());
    let _ = write!(
        b,
        r#"<table id="streams"><caption>{} open stream(s); this page refreshes every 2 seconds</caption><thead><tr><th scope="col">Device</th><th scope="col">Stream</th><th scope="col">Policy</th><th scope="col">Age</th><th scope="col" class="num">Bytes to device</th><th scope="col" class="num">Bytes from device</th><th scope="col">Id</th>{}{}</tr></thead><tbody>"#,
        rows.len(),
        if clustered {
            r#"<th scope="col">Node</th>"#
        } else {
            ""
        },
        if viewer.csrf.is_some() {
            r#"<th scope="col">Actions</th>"#
        } else {
            ""
        }
    );
    for (node, s) in rows {
        let id = esc(&s.stream_id);
        let _ = write!(
            b,
            r#"<tr data-stream="{id}"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class="num" data-bytes-to-device="{to}">{to}</td><td class="num" data-bytes-from-device="{from}">{from}</td><td><code>{id}</code></td>"#,
            esc(&s.device_id),
            esc(&s.stream_name),
            esc(&s.policy),
            age(Duration::from_millis(now_ms.saturating_sub(s.opened_at))),
            to = s.bytes_to_device,
            from = s.bytes_from_device,
        );
        if let Some(node) = node {
            let _ = write!(b, "<td>{}</td>", esc(node));
        }
        if viewer.csrf.is_some() {
            let label = format!("Close stream {} to {}", s.stream_name, s.device_id);
            b.push_str("<td>");
            b.push_str(&action_form(
                "/streams/close",
                &[("id", &s.stream_id)],
                &label,
                "Close",
                viewer,
            ));
            b.push_str("</td>");
        }
        b.push_str("</tr>");
    }
    b.push_str("</tbody></table>");
    b
}

/// The activity page's filter, as its GET form sends it.
#[derive(Default)]
pub struct ActivityFilter {
    pub device: String,
    /// `all` or an outcome's name.
    pub result: String,
    /// A humantime duration: `15m`, `1h`, `7d`.
    pub since: String,
}

/// `/activity`: the newest `rows` first; `error` says what was wrong with the filter.
pub fn activity(
    base: &str,
    rows: &[Entry],
    shown_of: usize,
    filter: &ActivityFilter,
    error: Option<&str>,
) -> String {
    let mut b = String::from("<h1>Activity</h1>");
    let mut results = vec!["all"];
    results.extend(crate::activity::Outcome::ALL.iter().map(|o| o.name()));
    let _ = write!(
        b,
        r#"<form class="filter" method="get" action="{base}/activity" role="search"><label>Device<input type="search" name="device" value="{}"></label>{}<label>Since (e.g. 15m, 1h, 7d)<input name="since" value="{}" size="6"></label><button type="submit">Filter</button></form>"#,
        esc(&filter.device),
        select("result", "Result", &results, &filter.result),
        esc(&filter.since),
    );
    if let Some(e) = error {
        let _ = write!(b, r#"<p class="error" role="alert">{}</p>"#, esc(e));
    }
    let _ = write!(
        b,
        r#"<table id="activity"><caption>{} record(s), newest first{}</caption><thead><tr><th scope="col">Time (UTC)</th><th scope="col">Device</th><th scope="col">Stream</th><th scope="col">Policy</th><th scope="col">Result</th><th scope="col" class="num">Set-up ms</th><th scope="col">Duration</th><th scope="col" class="num">Bytes to device</th><th scope="col" class="num">Bytes from device</th><th scope="col">Detail</th></tr></thead><tbody>"#,
        shown_of,
        if rows.len() < shown_of {
            format!(", the newest {} shown", rows.len())
        } else {
            String::new()
        }
    );
    for e in rows {
        let _ = write!(
            b,
            r#"<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class="num">{}</td><td>{}</td><td class="num">{}</td><td class="num">{}</td><td>{}</td></tr>"#,
            time(e.time),
            esc(&e.device),
            esc(&e.stream),
            esc(&e.policy),
            esc(&e.result),
            e.setup_ms.map(|m| format!("{m:.1}")).unwrap_or_default(),
            e.duration_ms
                .map(|m| age(Duration::from_millis(m as u64)))
                .unwrap_or_default(),
            e.bytes_to_device,
            e.bytes_from_device,
            esc(&e.detail),
        );
    }
    b.push_str("</tbody></table>");
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboard::pages::{layout, Nav};

    #[test]
    fn every_outside_value_is_escaped() {
        assert_eq!(esc(r#"<a href='x'>&"#), "&lt;a href=&#39;x&#39;&gt;&amp;");
        let entry = Entry {
            category: "DeviceStreams",
            time: 0,
            device: "<script>alert(1)</script>".into(),
            stream: "s\"x".into(),
            policy: "p".into(),
            result: "rejected".into(),
            setup_ms: None,
            duration_ms: None,
            bytes_to_device: 0,
            bytes_from_device: 0,
            detail: "<img src=x onerror=alert(1)>".into(),
        };
        let page = activity("", &[entry], 1, &ActivityFilter::default(), Some("<b>"));
        assert!(!page.contains("<script>") && !page.contains("<img") && !page.contains("<b>"));
        let viewer = Viewer {
            base: "/dashboard",
            policy: Some("<p>"),
            csrf: Some("t\""),
        };
        let row = DeviceRow {
            id: "\"><x",
            enabled: true,
            online: true,
            node: Some("<n>"),
            last_seen: None,
            open_streams: 0,
            auth: "sas",
        };
        let page = devices(&[row], 1, 10, &DeviceFilter::default(), &viewer, 0);
        let page = layout("t", Nav::Devices, &viewer, None, &page);
        assert!(!page.contains("\"><x") && !page.contains("<p>") && !page.contains("t\"\""));
        assert!(!page.contains("<n>") && page.contains(r#"action="/dashboard/devices/disable""#));
    }
}
