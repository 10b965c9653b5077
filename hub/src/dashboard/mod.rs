//! The hub's dashboard: server-rendered HTML pages on the admin listener
//! (`serve --admin-listen`), from the running hub's own state in memory and its registry.
//!
//! | path | does |
//! |---|---|
//! | `GET /` | devices: online/offline, status, last seen, open streams, authentication; `?q=&state=&page=` |
//! | `GET /streams` | open streams with live byte counts (the page reloads every 2 s) |
//! | `GET /activity` | the activity log; `?device=&result=&since=` |
//! | `GET\|POST /login`, `POST /logout` | sign in with a shared access policy ([`auth`]) |
//! | `POST /streams/close` | ends a stream (`id`) |
//! | `POST /devices/disable`, `POST /devices/enable` | (`id`); disabling cuts the device at once |
//! | `POST /devices/rotate-key` | (`id`, `key=primary\|secondary`); shows the new connection string once |
//!
//! Server-rendered rather than a script application: nothing to fetch from the internet
//! or vendor, every page works with script off (and in `chromium --dump-dom`), and the
//! only thing the browser runs is a form. Reading needs no sign-in on a loopback admin
//! listener (whoever reaches it can read `/metrics` and the database anyway); anywhere
//! else it needs a session with registry-read. Every action needs a session with
//! registry-write and its CSRF token, and is refused with 403 otherwise.

pub mod auth;
pub mod pages;

use std::collections::HashMap;

use bytes::Bytes;
use device_streams_protocol::{
    connection_string::{DeviceConnectionString, HostName},
    sas::unix_now,
};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::{
    activity::{self, unix_ms},
    http::{text, Body},
    live::device_states,
    registry::Right,
    revocation, Hub,
};
use auth::Session;
use pages::{Nav, Viewer};

/// Devices on one page of `/`: enough to scroll, few enough to render in milliseconds.
pub const PAGE_SIZE: usize = 500;

/// Activity records shown at most, newest first.
const MAX_ACTIVITY_ROWS: usize = 1000;

/// Largest form accepted.
const MAX_FORM: usize = 16 * 1024;

/// How the dashboard is being reached.
#[derive(Clone, Copy, Debug)]
pub struct Served {
    /// Reads without signing in: the admin listener is on a loopback address.
    pub open_reads: bool,
    /// Over TLS: the session cookie is `Secure`.
    pub secure: bool,
}

/// Whether a dashboard page or action lives at `path`.
pub fn serves(path: &str) -> bool {
    matches!(
        path,
        "/" | "/streams"
            | "/activity"
            | "/login"
            | "/logout"
            | "/streams/close"
            | "/devices/disable"
            | "/devices/enable"
            | "/devices/rotate-key"
            | pages::STYLE_PATH
    )
}

/// Answers a dashboard request.
pub async fn respond(hub: &Hub, served: Served, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let query = parse_form(req.uri().query().unwrap_or(""));
    let session = auth::cookie_session(req.headers())
        .and_then(|id| hub.dashboard.get(&id).map(|s| (id, s)))
        .filter(|(_, s)| s.may_view(&hub.registry));
    let method = req.method().clone();
    match (method, path.as_str()) {
        (Method::GET, pages::STYLE_PATH) => style(),
        (Method::GET, "/login") => html(
            StatusCode::OK,
            &page_for("Sign in", Nav::None, None, None, &pages::login(None)),
        ),
        (Method::POST, "/login") => login(hub, served, req).await,
        // Another site must not be able to sign an admin out either.
        (Method::POST, "/logout") if !same_origin(req.headers()) => {
            forbidden("The request came from another site.")
        }
        (Method::POST, "/logout") => logout(hub, served, session.map(|(id, _)| id)),
        (Method::GET, _) if session.is_none() && !served.open_reads => see_other("/login", None),
        (Method::GET, "/") => devices_page(hub, &query, session.as_ref().map(|s| &s.1)),
        (Method::GET, "/streams") => streams_page(hub, session.as_ref().map(|s| &s.1)),
        (Method::GET, "/activity") => activity_page(hub, &query, session.as_ref().map(|s| &s.1)),
        (Method::POST, _) => {
            let session = session.map(|(_, s)| s);
            action(hub, req, &path, session).await
        }
        _ => html(
            StatusCode::NOT_FOUND,
            &page_for(
                "Not found",
                Nav::None,
                None,
                None,
                &pages::message("Not found", "There is no such page."),
            ),
        ),
    }
}

/// The page skeleton for `session`'s viewer.
fn page_for(
    title: &str,
    nav: Nav,
    session: Option<&Session>,
    refresh: Option<u32>,
    body: &str,
) -> String {
    let viewer = viewer(None, session);
    pages::layout(title, nav, &viewer, refresh, body)
}

fn viewer<'a>(hub: Option<&Hub>, session: Option<&'a Session>) -> Viewer<'a> {
    let can_act = match (hub, session) {
        (Some(hub), Some(s)) => s.allows(&hub.registry, Right::RegistryWrite),
        _ => false,
    };
    Viewer {
        policy: session.map(|s| s.policy.as_str()),
        csrf: session.filter(|_| can_act).map(|s| s.csrf.as_str()),
    }
}

fn devices_page(
    hub: &Hub,
    query: &HashMap<String, String>,
    session: Option<&Session>,
) -> Response<Body> {
    let filter = pages::DeviceFilter {
        q: query.get("q").cloned().unwrap_or_default(),
        state: query
            .get("state")
            .filter(|s| pages::DEVICE_STATES.contains(&s.as_str()))
            .cloned()
            .unwrap_or_else(|| "all".into()),
        page: query.get("page").and_then(|p| p.parse().ok()).unwrap_or(0),
    };
    let loaded = (|| {
        Ok::<_, crate::registry::RegistryError>((
            hub.registry.devices()?,
            device_states(&hub.registry)?,
            hub.registry.device_auths()?,
        ))
    })();
    let (list, states, auths) = match loaded {
        Ok(l) => l,
        Err(e) => return unavailable(&e.to_string()),
    };
    // Open streams from memory, so the count agrees with /streams this instant.
    let mut open: HashMap<String, usize> = HashMap::new();
    for s in hub.live.snapshot() {
        *open.entry(s.device_id).or_default() += 1;
    }
    let needle = filter.q.to_lowercase();
    let rows: Vec<pages::DeviceRow<'_>> = list
        .iter()
        .filter(|d| needle.is_empty() || d.id.to_lowercase().contains(&needle))
        .map(|d| {
            let state = states.get(&d.id).copied().unwrap_or_default();
            pages::DeviceRow {
                id: &d.id,
                enabled: d.enabled,
                online: hub.sessions.is_connected(&d.id),
                last_seen: state.last_seen.or(d.last_connected_at),
                open_streams: open.get(&d.id).copied().unwrap_or(0),
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
    let page =
        &rows[(filter.page * PAGE_SIZE).min(total)..((filter.page + 1) * PAGE_SIZE).min(total)];
    let viewer = viewer(Some(hub), session);
    let body = pages::devices(page, total, PAGE_SIZE, &filter, &viewer, unix_now());
    html(
        StatusCode::OK,
        &pages::layout("Devices", Nav::Devices, &viewer, None, &body),
    )
}

fn streams_page(hub: &Hub, session: Option<&Session>) -> Response<Body> {
    let rows = hub.live.snapshot();
    let viewer = viewer(Some(hub), session);
    let now = unix_ms(std::time::SystemTime::now());
    let body = pages::streams(&rows, &viewer, now);
    html(
        StatusCode::OK,
        &pages::layout("Streams", Nav::Streams, &viewer, Some(2), &body),
    )
}

fn activity_page(
    hub: &Hub,
    query: &HashMap<String, String>,
    session: Option<&Session>,
) -> Response<Body> {
    let mut filter = pages::ActivityFilter {
        device: query
            .get("device")
            .map(|d| d.trim().to_string())
            .unwrap_or_default(),
        result: query.get("result").cloned().unwrap_or_else(|| "all".into()),
        since: query
            .get("since")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
    };
    if filter.since.is_empty() {
        filter.since = "1h".into();
    }
    let mut error = None;
    let since = match humantime::parse_duration(&filter.since) {
        Ok(d) => d,
        Err(e) => {
            error = Some(format!(
                "'since' is not a duration ({e}); showing the last hour"
            ));
            std::time::Duration::from_secs(3600)
        }
    };
    let since_ms = unix_ms(std::time::SystemTime::now()).saturating_sub(since.as_millis() as u64);
    let device = Some(filter.device.as_str()).filter(|d| !d.is_empty());
    let entries = match activity::query(hub.registry.path(), device, since_ms) {
        Ok(e) => e,
        Err(e) => return unavailable(&format!("{e:#}")),
    };
    let matching: Vec<_> = entries
        .into_iter()
        .rev()
        .filter(|e| filter.result == "all" || e.result == filter.result)
        .collect();
    let shown = &matching[..matching.len().min(MAX_ACTIVITY_ROWS)];
    let viewer = viewer(Some(hub), session);
    let body = pages::activity(shown, matching.len(), &filter, error.as_deref());
    html(
        StatusCode::OK,
        &pages::layout("Activity", Nav::Activity, &viewer, None, &body),
    )
}

async fn login(hub: &Hub, served: Served, req: Request<Incoming>) -> Response<Body> {
    let Some(form) = read_form(req).await else {
        return bad_form();
    };
    let policy = form.get("policy").map(String::as_str).unwrap_or("");
    let key = form.get("key").map(String::as_str).unwrap_or("");
    match hub.dashboard.sign_in(&hub.registry, policy, key) {
        Ok((id, _)) => {
            tracing::info!(policy = %policy.escape_debug(), "dashboard: signed in");
            see_other("/", Some(auth::set_cookie(&id, served.secure)))
        }
        Err(why) => {
            hub.metrics.auth_failure(crate::metrics::AuthKind::Service);
            tracing::info!(policy = %policy.escape_debug(), "dashboard: sign-in refused");
            let message = match why {
                auth::SignInError::WrongCredentials => {
                    "Sign-in failed: no policy has that name and key."
                }
                auth::SignInError::NoRight => {
                    "Sign-in failed: this policy has neither registry-read nor registry-write."
                }
            };
            let body = page_for(
                "Sign in",
                Nav::None,
                None,
                None,
                &pages::login(Some(message)),
            );
            html(StatusCode::UNAUTHORIZED, &body)
        }
    }
}

fn logout(hub: &Hub, served: Served, id: Option<String>) -> Response<Body> {
    if let Some(id) = id {
        hub.dashboard.sign_out(&id);
    }
    see_other("/login", Some(auth::clear_cookie(served.secure)))
}

/// An action: only with a session whose policy has registry-write, and the session's CSRF
/// token in the form, from a page of this same origin.
async fn action(
    hub: &Hub,
    req: Request<Incoming>,
    path: &str,
    session: Option<Session>,
) -> Response<Body> {
    if !same_origin(req.headers()) {
        return forbidden("The request came from another site.");
    }
    let Some(session) = session else {
        return forbidden("Sign in first: actions need a signed-in session.");
    };
    if !session.allows(&hub.registry, Right::RegistryWrite) {
        return forbidden("Your policy lacks registry-write, which actions need.");
    }
    let Some(form) = read_form(req).await else {
        return bad_form();
    };
    let csrf = form.get("csrf").map(String::as_str).unwrap_or("");
    if !auth::token_eq(csrf, &session.csrf) {
        return forbidden(
            "The form's CSRF token is missing or stale: reload the page and try again.",
        );
    }
    let id = form.get("id").map(String::as_str).unwrap_or("");
    let by = session.policy.as_str();
    match path {
        "/streams/close" => {
            let found = hub.live.close(id);
            tracing::info!(stream = %id.escape_debug(), found, policy = %by, "dashboard: close stream");
            match found {
                true => see_other("/streams", None),
                false => message(
                    StatusCode::NOT_FOUND,
                    "No such stream",
                    "That stream is not open (any more).",
                ),
            }
        }
        "/devices/disable" | "/devices/enable" => {
            let enable = path == "/devices/enable";
            if let Err(e) = hub.registry.set_enabled(id, enable) {
                return message(StatusCode::NOT_FOUND, "Not changed", &e.to_string());
            }
            revocation::enforce(hub);
            tracing::info!(device = %id.escape_debug(), enable, policy = %by, "dashboard: device status changed");
            see_other("/", None)
        }
        "/devices/rotate-key" => rotate(hub, id, form.get("key").map(String::as_str), &session),
        _ => message(
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no such action.",
        ),
    }
}

fn rotate(hub: &Hub, id: &str, key: Option<&str>, session: &Session) -> Response<Body> {
    let secondary = key == Some("secondary");
    match hub.registry.device_auth(id) {
        Ok(a) if a.is_x509() => {
            return message(
                StatusCode::CONFLICT,
                "No key to rotate",
                "This device signs in with a certificate, not a key.",
            )
        }
        Ok(_) => {}
        Err(e) => return message(StatusCode::NOT_FOUND, "Not rotated", &e.to_string()),
    }
    let device = match hub.registry.rotate_key(id, secondary) {
        Ok(d) => d,
        Err(e) => return message(StatusCode::NOT_FOUND, "Not rotated", &e.to_string()),
    };
    // The session that signed in with the old key goes now, as `device rotate-key` does.
    revocation::enforce(hub);
    tracing::info!(device = %id.escape_debug(), secondary, policy = %session.policy, "dashboard: key rotated");
    let host: HostName = match hub.config.hostname.parse() {
        Ok(h) => h,
        Err(_) => return unavailable("the hub's host name does not parse"),
    };
    let key = if secondary {
        device.secondary_key
    } else {
        device.primary_key
    };
    let cs = DeviceConnectionString::new(host, id, key).to_secret_string();
    let body = pages::rotated(id, cs.expose());
    let viewer = viewer(Some(hub), Some(session));
    html(
        StatusCode::OK,
        &pages::layout("New key", Nav::Devices, &viewer, None, &body),
    )
}

/// Whether a POST's `Origin`, when it names one, is this host: a cross-site form is
/// refused even before its (missing) CSRF token is looked at.
fn same_origin(headers: &http::HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, h)| h);
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

/// A form body (`application/x-www-form-urlencoded`) of at most [`MAX_FORM`] bytes.
async fn read_form(req: Request<Incoming>) -> Option<HashMap<String, String>> {
    let body = Limited::new(req.into_body(), MAX_FORM)
        .collect()
        .await
        .ok()?;
    let body = String::from_utf8(body.to_bytes().to_vec()).ok()?;
    Some(parse_form(&body))
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

fn html(status: StatusCode, body: &str) -> Response<Body> {
    let mut resp = text(status, body.to_string());
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // Pages show keys (once) and live state: never cache them.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // No script anywhere, nothing from elsewhere, never inside another site's frame.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    resp
}

fn style() -> Response<Body> {
    let mut resp = text(StatusCode::OK, Bytes::from_static(pages::STYLE.as_bytes()));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=3600"),
    );
    resp
}

fn see_other(location: &'static str, cookie: Option<String>) -> Response<Body> {
    let mut resp = text(StatusCode::SEE_OTHER, Bytes::new());
    let h = resp.headers_mut();
    h.insert(header::LOCATION, HeaderValue::from_static(location));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.insert(header::SET_COOKIE, c);
    }
    resp
}

fn message(status: StatusCode, heading: &str, text: &str) -> Response<Body> {
    html(
        status,
        &page_for(
            heading,
            Nav::None,
            None,
            None,
            &pages::message(heading, text),
        ),
    )
}

fn forbidden(why: &str) -> Response<Body> {
    message(StatusCode::FORBIDDEN, "Forbidden", why)
}

fn bad_form() -> Response<Body> {
    message(
        StatusCode::BAD_REQUEST,
        "Bad request",
        "The form could not be read.",
    )
}

fn unavailable(why: &str) -> Response<Body> {
    message(
        StatusCode::SERVICE_UNAVAILABLE,
        "Unavailable",
        &format!("The registry could not be read: {why}"),
    )
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
    fn a_post_from_another_origin_is_not_same_origin() {
        let mut h = http::HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:9090".parse().unwrap());
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, "http://127.0.0.1:9090".parse().unwrap());
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        assert!(!same_origin(&h));
    }
}
