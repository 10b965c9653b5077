//! The hub's dashboard: server-rendered HTML pages from the running hub's own state and
//! its registry, on the admin listener (`serve --admin-listen`, at `/`) and, with
//! `serve --dashboard`, on the TLS port under [`TLS_BASE`].
//!
//! | path | does |
//! |---|---|
//! | `GET /` | devices: online/offline, status, last seen, open streams, authentication; `?q=&state=&page=` |
//! | `GET /streams` | open streams with live byte counts (the page reloads every 2 s) |
//! | `GET /activity` | the activity log; `?device=&result=&since=` |
//! | `GET /charts` | the last hour of the hub's metrics as charts ([`charts`], [`history`]) |
//! | `GET\|POST /login`, `POST /logout` | sign in with a shared access policy ([`auth`]) |
//! | `POST /streams/close` | ends a stream (`id`) |
//! | `POST /devices/disable`, `POST /devices/enable` | (`id`); disabling cuts the device at once |
//! | `POST /devices/rotate-key` | (`id`, `key=primary\|secondary`), then `GET /rotated` shows the new connection string once |
//!
//! Server-rendered rather than a script application: nothing to fetch from the internet
//! or vendor, every page works with script off (and in `chromium --dump-dom`), and the
//! only thing the browser runs is a form. Reading needs no sign-in on a loopback admin
//! listener (whoever reaches it can read `/metrics` and the database anyway); anywhere
//! else — the TLS port included — it needs a session with registry-read, registry-list
//! or registry-write. Every action needs registry-write ([`actions`]).

pub mod actions;
pub mod auth;
pub mod charts;
pub mod fleet;
pub mod history;
pub mod pages;
pub mod reply;
pub mod tables;
pub mod views;

use std::collections::HashMap;

use http::{Method, Request, Response};
use hyper::body::Incoming;

use crate::{
    http::{Body, ConnPermit},
    registry::Right,
    Hub,
};
use auth::Session;
use pages::Viewer;

/// Where `serve --dashboard` mounts the dashboard on the TLS port: no path of Azure's
/// REST API, MQTT or streaming endpoint starts with it.
pub const TLS_BASE: &str = "/dashboard";

/// How the dashboard is being reached.
#[derive(Clone, Copy, Debug)]
pub struct Served {
    /// Reads without signing in: the admin listener is on a loopback address.
    pub open_reads: bool,
    /// Over TLS: the session cookie is `Secure`.
    pub secure: bool,
    /// The path the dashboard is mounted at (`""` for `/`).
    pub base: &'static str,
}

impl Served {
    /// On the TLS port: sign-in for everything, a `Secure` cookie, under [`TLS_BASE`].
    pub const TLS: Served = Served {
        open_reads: false,
        secure: true,
        base: TLS_BASE,
    };
}

/// Whether a dashboard page or action lives at `path` (below the mount point).
pub fn serves(path: &str) -> bool {
    matches!(
        path,
        "/" | "/streams"
            | "/activity"
            | "/charts"
            | "/login"
            | "/logout"
            | "/rotated"
            | "/streams/close"
            | "/devices/disable"
            | "/devices/enable"
            | "/devices/rotate-key"
            | pages::STYLE_PATH
    )
}

/// The dashboard's path for a TLS-port request to `path`, if it is one of its pages.
pub fn on_tls_port(path: &str) -> Option<&str> {
    match path.strip_prefix(TLS_BASE)? {
        "" => Some("/"),
        p => Some(p).filter(|p| serves(p)),
    }
}

/// Answers a dashboard request for `path` (below the mount point).
pub async fn respond(
    hub: &Hub,
    served: Served,
    path: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    let base = served.base;
    let query = parse_form(req.uri().query().unwrap_or(""));
    let session = auth::cookie_session(req.headers())
        .and_then(|id| hub.dashboard.get(&id).map(|s| (id, s)))
        .filter(|(_, s)| s.may_view(&hub.registry));
    if session.is_some() {
        // A signed-in admin's connection no longer holds an unauthenticated place.
        ConnPermit::authenticated_on(&req);
    }
    let signed_in = session.as_ref().map(|(id, s)| (id.as_str(), s));
    let viewer = viewer(hub, base, signed_in.map(|(_, s)| s));
    let method = req.method().clone();
    match (method, path) {
        (Method::GET, pages::STYLE_PATH) => reply::style(),
        (Method::GET, "/login") => login_page(base),
        // Another site must not be able to sign an admin in (as someone else) or out.
        (Method::POST, "/login" | "/logout") if !actions::same_origin(req.headers()) => {
            reply::forbidden(base, "The request came from another site.")
        }
        (Method::POST, "/login") => actions::login(hub, served, req).await,
        (Method::POST, "/logout") => actions::logout(hub, served, signed_in.map(|(id, _)| id)),
        (Method::GET, _) if session.is_none() && !served.open_reads => {
            reply::see_other(&format!("{base}/login"), None)
        }
        (Method::GET, "/") => views::devices(hub, served, &query, &viewer).await,
        (Method::GET, "/streams") => views::streams(hub, &viewer).await,
        (Method::GET, "/activity") => views::activity(hub, served, &query, &viewer).await,
        (Method::GET, "/charts") => views::charts(hub, &viewer),
        (Method::GET, "/rotated") => views::rotated(hub, served, signed_in, &viewer),
        (Method::POST, _) => actions::act(hub, served, req, path, session).await,
        _ => reply::not_found(base),
    }
}

fn login_page(base: &str) -> Response<Body> {
    let viewer = Viewer {
        base,
        policy: None,
        csrf: None,
    };
    let body = pages::login(base, None);
    let page = pages::layout("Sign in", pages::Nav::None, &viewer, None, &body);
    reply::html(http::StatusCode::OK, &page)
}

/// Who is looking: the signed-in policy, and its CSRF token when it may act.
fn viewer<'a>(hub: &Hub, base: &'a str, session: Option<&'a Session>) -> Viewer<'a> {
    let can_act = session.is_some_and(|s| s.allows(&hub.registry, Right::RegistryWrite));
    Viewer {
        base,
        policy: session.map(|s| s.policy.as_str()),
        csrf: session.filter(|_| can_act).map(|s| s.csrf.as_str()),
    }
}

/// `a=1&b=x+y` → {a: 1, b: "x y"}; a pair that does not decode is left out.
pub fn parse_form(s: &str) -> HashMap<String, String> {
    let decode = |v: &str| device_streams_protocol::sas::url_decode(&v.replace('+', " ")).ok();
    s.split('&')
        .filter(|kv| !kv.is_empty())
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            Some((decode(k)?, decode(v)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode_plus_and_percent_and_skip_what_does_not() {
        let f = parse_form("policy=a+b&key=x%2By%3D&bad=%FF&empty=&&flag");
        assert_eq!(f["policy"], "a b");
        assert_eq!(f["key"], "x+y=");
        assert_eq!(f["empty"], "");
        assert_eq!(f["flag"], "");
        assert!(!f.contains_key("bad"));
    }

    #[test]
    fn on_the_tls_port_only_the_dashboards_own_paths_are_its() {
        assert_eq!(on_tls_port("/dashboard"), Some("/"));
        assert_eq!(on_tls_port("/dashboard/charts"), Some("/charts"));
        assert_eq!(on_tls_port("/dashboard/nothing"), None);
        assert_eq!(on_tls_port("/devices/dev1"), None);
        assert_eq!(on_tls_port("/dashboardx/"), None);
    }
}
