//! The dashboard's HTTP replies, each with the headers every page must carry: pages show
//! a key once and live state, so they are never cached; no page runs script or may be
//! framed by another site.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use super::pages::{self, Nav, Viewer};
use crate::http::{text, Body};

pub fn html(status: StatusCode, body: &str) -> Response<Body> {
    let mut resp = text(status, body.to_string());
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
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

pub fn style() -> Response<Body> {
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

/// 303 to `location` (a path of the dashboard's own), optionally setting a cookie.
pub fn see_other(location: &str, cookie: Option<String>) -> Response<Body> {
    let mut resp = text(StatusCode::SEE_OTHER, Bytes::new());
    let h = resp.headers_mut();
    if let Ok(l) = HeaderValue::from_str(location) {
        h.insert(header::LOCATION, l);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.insert(header::SET_COOKIE, c);
    }
    resp
}

/// A short page saying `text`, for no one in particular (no session's links or forms).
pub fn message(base: &str, status: StatusCode, heading: &str, text: &str) -> Response<Body> {
    let viewer = Viewer {
        base,
        policy: None,
        csrf: None,
    };
    let body = pages::message(base, heading, text);
    html(
        status,
        &pages::layout(heading, Nav::None, &viewer, None, &body),
    )
}

pub fn forbidden(base: &str, why: &str) -> Response<Body> {
    message(base, StatusCode::FORBIDDEN, "Forbidden", why)
}

pub fn bad_form(base: &str) -> Response<Body> {
    message(
        base,
        StatusCode::BAD_REQUEST,
        "Bad request",
        "The form could not be read.",
    )
}

pub fn unavailable(base: &str, why: &str) -> Response<Body> {
    message(
        base,
        StatusCode::SERVICE_UNAVAILABLE,
        "Unavailable",
        &format!("The registry could not be read: {why}"),
    )
}

pub fn not_found(base: &str) -> Response<Body> {
    message(
        base,
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no such page.",
    )
}
