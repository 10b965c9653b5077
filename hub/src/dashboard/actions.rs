//! What the dashboard's forms change: sign-in and sign-out, and the admin actions —
//! close a stream, disable or enable a device, rotate a device's key.
//!
//! An action needs a session whose policy has registry-write, the session's CSRF token in
//! the form, and a request from this same origin; anything less is 403 and changes
//! nothing. Every action answers with a redirect (Post/Redirect/Get), so a reload never
//! repeats it; a rotation's new connection string waits in the session for the one page
//! that shows it ([`super::auth::Flash`]), never in a URL or a log.

use std::collections::HashMap;

use device_streams_protocol::connection_string::{DeviceConnectionString, HostName};
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::{
    auth::{self, Flash, Session},
    fleet, pages, parse_form,
    reply::{bad_form, forbidden, html, message, see_other, unavailable},
    Served,
};
use crate::{http::Body, registry::Right, revocation, Hub};

/// Largest form accepted.
const MAX_FORM: usize = 16 * 1024;

pub async fn login(hub: &Hub, served: Served, req: Request<Incoming>) -> Response<Body> {
    let base = served.base;
    let Some(form) = read_form(req).await else {
        return bad_form(base);
    };
    let policy = form.get("policy").map(String::as_str).unwrap_or("");
    let key = form.get("key").map(String::as_str).unwrap_or("");
    match hub.dashboard.sign_in(&hub.registry, policy, key) {
        Ok((id, _)) => {
            tracing::info!(policy = %policy.escape_debug(), "dashboard: signed in");
            let cookie = auth::set_cookie(&id, served.secure, base);
            see_other(&format!("{base}/"), Some(cookie))
        }
        Err(why) => {
            hub.metrics.auth_failure(crate::metrics::AuthKind::Service);
            tracing::info!(policy = %policy.escape_debug(), "dashboard: sign-in refused");
            let message = match why {
                auth::SignInError::WrongCredentials => {
                    "Sign-in failed: no policy has that name and key."
                }
                auth::SignInError::NoRight => {
                    "Sign-in failed: this policy has none of registry-read, registry-list and registry-write."
                }
            };
            let viewer = pages::Viewer {
                base,
                policy: None,
                csrf: None,
            };
            let body = pages::login(base, Some(message));
            let page = pages::layout("Sign in", pages::Nav::None, &viewer, None, &body);
            html(StatusCode::UNAUTHORIZED, &page)
        }
    }
}

pub fn logout(hub: &Hub, served: Served, id: Option<&str>) -> Response<Body> {
    if let Some(id) = id {
        hub.dashboard.sign_out(id);
    }
    let cookie = auth::clear_cookie(served.secure, served.base);
    see_other(&format!("{}/login", served.base), Some(cookie))
}

/// An action at `path` for the session `signed_in` (its id and state), if any.
pub async fn act(
    hub: &Hub,
    served: Served,
    req: Request<Incoming>,
    path: &str,
    signed_in: Option<(String, Session)>,
) -> Response<Body> {
    let base = served.base;
    let (sid, session, form) = match authorize(hub, base, req, signed_in).await {
        Ok(allowed) => allowed,
        Err(refused) => return refused,
    };
    let id = form.get("id").map(String::as_str).unwrap_or("");
    let by = session.policy.as_str();
    match path {
        "/streams/close" => {
            let found = fleet::close_stream(hub, id).await;
            tracing::info!(stream = %id.escape_debug(), found, policy = %by, "dashboard: close stream");
            match found {
                true => see_other(&format!("{base}/streams"), None),
                false => message(
                    base,
                    StatusCode::NOT_FOUND,
                    "No such stream",
                    "That stream is not open (any more).",
                ),
            }
        }
        "/devices/disable" | "/devices/enable" => {
            let enable = path == "/devices/enable";
            if let Err(e) = hub.registry.set_enabled(id, enable) {
                return message(base, StatusCode::NOT_FOUND, "Not changed", &e.to_string());
            }
            revocation::enforce(hub);
            tracing::info!(device = %id.escape_debug(), enable, policy = %by, "dashboard: device status changed");
            see_other(&format!("{base}/"), None)
        }
        "/devices/rotate-key" => {
            let secondary = form.get("key").map(String::as_str) == Some("secondary");
            rotate(hub, base, id, secondary, (&sid, &session))
        }
        _ => message(
            base,
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no such action.",
        ),
    }
}

/// The session and form of an action that may go ahead, or the refusal: a request from
/// another origin, without a session, without registry-write, or without the CSRF token.
async fn authorize(
    hub: &Hub,
    base: &str,
    req: Request<Incoming>,
    signed_in: Option<(String, Session)>,
) -> Result<(String, Session, HashMap<String, String>), Response<Body>> {
    if !same_origin(req.headers()) {
        return Err(forbidden(base, "The request came from another site."));
    }
    let Some((sid, session)) = signed_in else {
        return Err(forbidden(
            base,
            "Sign in first: actions need a signed-in session.",
        ));
    };
    if !session.allows(&hub.registry, Right::RegistryWrite) {
        return Err(forbidden(
            base,
            "Your policy lacks registry-write, which actions need.",
        ));
    }
    let form = read_form(req).await.ok_or_else(|| bad_form(base))?;
    let csrf = form.get("csrf").map(String::as_str).unwrap_or("");
    if !auth::token_eq(csrf, &session.csrf) {
        return Err(forbidden(
            base,
            "The form's CSRF token is missing or stale: reload the page and try again.",
        ));
    }
    Ok((sid, session, form))
}

/// Rotates one of `id`'s keys, leaves the new connection string in the session and
/// redirects to the page that shows it once.
fn rotate(
    hub: &Hub,
    base: &str,
    id: &str,
    secondary: bool,
    (sid, session): (&str, &Session),
) -> Response<Body> {
    let not_rotated = |e: &dyn std::fmt::Display| {
        message(base, StatusCode::NOT_FOUND, "Not rotated", &e.to_string())
    };
    match hub.registry.device_auth(id) {
        Ok(a) if a.is_x509() => {
            return message(
                base,
                StatusCode::CONFLICT,
                "No key to rotate",
                "This device signs in with a certificate, not a key.",
            )
        }
        Ok(_) => {}
        Err(e) => return not_rotated(&e),
    }
    let host: HostName = match hub.config.hostname.parse() {
        Ok(h) => h,
        Err(_) => return unavailable(base, "the hub's host name does not parse"),
    };
    let device = match hub.registry.rotate_key(id, secondary) {
        Ok(d) => d,
        Err(e) => return not_rotated(&e),
    };
    // The session that signed in with the old key goes now, as `device rotate-key` does.
    revocation::enforce(hub);
    tracing::info!(device = %id.escape_debug(), secondary, policy = %session.policy, "dashboard: key rotated");
    let key = match secondary {
        true => device.secondary_key,
        false => device.primary_key,
    };
    let flash = Flash {
        device: id.to_string(),
        connection_string: DeviceConnectionString::new(host, id, key).to_secret_string(),
    };
    hub.dashboard.set_flash(sid, flash);
    see_other(&format!("{base}/rotated"), None)
}

/// Whether a POST's `Origin`, when it names one, is this host: a cross-site form is
/// refused even before its (missing) CSRF token is looked at.
pub fn same_origin(headers: &http::HeaderMap) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

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
