//! The dashboard's HTML, rendered on the server: the page skeleton, the sign-in, message
//! and rotated-key pages, and what every page shares (escaping, forms, ages and times).
//! The lists are in [`super::tables`]. No script anywhere.
//!
//! Every value that comes from outside — device ids, stream names, policy names, activity
//! details (a device's rejection reason is its own text) — goes through [`esc`]; the
//! page skeletons are constants. The stylesheet is compiled in ([`STYLE`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The stylesheet, served at [`STYLE_PATH`].
pub const STYLE: &str = include_str!("style.css");
pub const STYLE_PATH: &str = "/static/style.css";

/// `s` safe inside HTML text and double- or single-quoted attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `s` percent-encoded for a query string value (so a link keeps odd ids intact).
pub fn query_value(s: &str) -> String {
    device_streams_protocol::sas::url_encode(s)
}

/// Which page the navigation marks as current.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Devices,
    Streams,
    Activity,
    Charts,
    None,
}

/// What the page header says about who is looking, and what their forms carry.
pub struct Viewer<'a> {
    /// Where the dashboard is mounted: `""` on the admin listener, `/dashboard` on the
    /// TLS port (`serve --dashboard`); every link and form starts with it.
    pub base: &'a str,
    /// The signed-in policy, if any.
    pub policy: Option<&'a str>,
    /// The session's CSRF token when it may act (registry-write); action buttons are only
    /// shown then.
    pub csrf: Option<&'a str>,
}

impl Viewer<'_> {
    pub fn csrf_field(&self) -> String {
        match self.csrf {
            Some(t) => format!(r#"<input type="hidden" name="csrf" value="{}">"#, esc(t)),
            None => String::new(),
        }
    }
}

/// The page around `body`; `refresh` reloads it every so many seconds.
pub fn layout(
    title: &str,
    nav: Nav,
    viewer: &Viewer<'_>,
    refresh: Option<u32>,
    body: &str,
) -> String {
    let base = viewer.base;
    let link = |n: Nav, href: &str, label: &str| {
        let current = if n == nav {
            r#" aria-current="page""#
        } else {
            ""
        };
        format!(r#"<a href="{base}{href}"{current}>{label}</a>"#)
    };
    let refresh = match refresh {
        Some(s) => format!(r#"<meta http-equiv="refresh" content="{s}">"#),
        None => String::new(),
    };
    let who = match viewer.policy {
        Some(p) => format!(
            r#"<span>Signed in as <strong>{}</strong></span><form method="post" action="{base}/logout">{}<button type="submit">Sign out</button></form>"#,
            esc(p),
            viewer.csrf_field()
        ),
        None => format!(r#"<a href="{base}/login">Sign in</a>"#),
    };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
{refresh}<title>{title} · stream-hub</title><link rel="stylesheet" href="{base}{STYLE_PATH}"></head>
<body><header><span class="brand">stream-hub</span><nav aria-label="Dashboard">{}{}{}{}</nav><div class="who">{who}</div></header>
<main>{body}</main></body></html>
"#,
        link(Nav::Devices, "/", "Devices"),
        link(Nav::Streams, "/streams", "Streams"),
        link(Nav::Activity, "/activity", "Activity"),
        link(Nav::Charts, "/charts", "Charts"),
        title = esc(title),
    )
}

/// `/login`; `error` says why the last attempt failed.
pub fn login(base: &str, error: Option<&str>) -> String {
    let error = match error {
        Some(e) => format!(r#"<p class="error" role="alert">{}</p>"#, esc(e)),
        None => String::new(),
    };
    format!(
        r#"<h1>Sign in</h1>{error}<p>With a shared access policy of this hub: registry-read or registry-list to look, registry-write to act.</p>
<form class="login" method="post" action="{base}/login"><label>Policy name<input name="policy" autocomplete="username" required></label><label>Key<input name="key" type="password" autocomplete="current-password" required></label><button type="submit">Sign in</button></form>"#
    )
}

/// What a rotation produced: the device's new connection string, shown this once.
pub fn rotated(base: &str, device: &str, connection_string: &str) -> String {
    format!(
        r#"<h1>New key for {}</h1><p>The device's new connection string. It is shown this once — reloading this page will not show it again: copy it to the device now. A session that signed in with the old key has been cut.</p><p class="secret" id="connection-string">{}</p><p><a href="{base}/">Back to devices</a></p>"#,
        esc(device),
        esc(connection_string)
    )
}

/// A short page saying `message`.
pub fn message(base: &str, heading: &str, message: &str) -> String {
    format!(
        r#"<h1>{}</h1><p role="alert">{}</p><p><a href="{base}/">Back to devices</a></p>"#,
        esc(heading),
        esc(message)
    )
}

/// `d` as a short age: `42s`, `3m 5s`, `2h 10m`, `4d 3h`.
pub fn age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

/// Unix milliseconds as `2026-01-02 03:04:05`.
pub fn time(ms: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms);
    let t = humantime::format_rfc3339_seconds(
        t.min(SystemTime::now() + Duration::from_secs(86400 * 365)),
    );
    t.to_string()
        .replace('T', " ")
        .trim_end_matches('Z')
        .to_string()
}
