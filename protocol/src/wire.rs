//! The Azure IoT Hub device-streams wire protocol: names, paths, headers and limits.
//!
//! Both proxies and the hub take every protocol string from here, so the three agree
//! with each other and with Azure's SDKs by construction.
//!
//! Our extensions, each negotiated so that Azure never sees them: half-close, the ping
//! interval and rejection reasons (here), and the fast path (warm and standby
//! connections, a stream in about two round trips: [`crate::fast`]).

use std::time::Duration;

use crate::{
    sas::{url_decode, url_encode},
    Secret,
};

/// The `api-version` the clients send and the hub accepts, as Azure's device streams.
pub const API_VERSION: &str = "2020-09-30";

/// Path of MQTT over WebSocket on the main endpoint, and the subprotocol it negotiates.
pub const MQTT_WS_PATH: &str = "/$iothub/websocket";
/// The WebSocket subprotocol of MQTT over WebSocket.
pub const MQTT_WS_SUBPROTOCOL: &str = "mqtt";
/// Path prefix of the streaming endpoint.
pub const BRIDGES_PREFIX: &str = "/bridges/";
/// Header on a stream's WebSocket upgrade (request and 101 reply) by which our proxies
/// and our hub agree to carry half-close; Azure knows nothing of it, so it stays off there.
pub const HALF_CLOSE_HEADER: &str = "x-device-streams-half-close";
/// In our hub's 101 reply: it pings this stream every so many milliseconds when idle, so
/// a proxy that hears nothing for several intervals knows its link to the hub is dead.
pub const PING_INTERVAL_HEADER: &str = "x-device-streams-ping-interval-ms";
/// Payload of the Ping that says "no more data in this direction" once half-close is agreed.
pub const EOF_PING: &[u8] = b"device-streams:eof";
/// Property our hub adds to its stream request topics: it reads a rejecting device's
/// reason from the answer's payload. Azure's hub never sends it, and its answers are
/// empty, so a device answers with a payload only when the request carries this.
pub const REASON_PROPERTY: &str = "$x-reason";
/// In our hub's rejected answer (`iothub-streaming-is-accepted: False`): the device's
/// reason. Azure's clients ignore a header they do not know.
pub const REASON_HEADER: &str = "x-device-streams-reason";
/// Most bytes of a rejection's reason that travel, so a device cannot make the hub store
/// or forward more than a line.
pub const MAX_REASON: usize = 256;

/// What a device subscribes to in order to receive stream requests.
pub const STREAM_REQUEST_FILTER: &str = "$iothub/streams/POST/#";
const STREAM_REQUEST_PREFIX: &str = "$iothub/streams/POST/";
const STREAM_RESPONSE_PREFIX: &str = "$iothub/streams/res/";

/// Stream request header: seconds both sides have to reach the streaming endpoint.
pub const HEADER_CONNECT_TIMEOUT: &str = "iothub-streaming-connect-timeout-in-seconds";
/// Stream request header: seconds the device has to answer.
pub const HEADER_RESPONSE_TIMEOUT: &str = "iothub-streaming-response-timeout-in-seconds";
/// Answer header: whether the device accepted (`True`/`False`).
pub const HEADER_IS_ACCEPTED: &str = "iothub-streaming-is-accepted";
/// Answer header: the stream's `wss://` URL.
pub const HEADER_URL: &str = "iothub-streaming-url";
/// Answer header: the service side's one-time stream token.
pub const HEADER_AUTH_TOKEN: &str = "iothub-streaming-auth-token";

/// Azure's default for both the connect and the response timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest data message on a stream's WebSocket, the most we accept.
pub const MAX_DATA_MESSAGE: usize = 64 * 1024;
/// Largest data message we send: 8 bytes short of [`MAX_DATA_MESSAGE`], so that with its
/// WebSocket frame header (4 bytes, 8 when masked) a full message fits four full TLS
/// records and goes out in one system call. A 64 KiB message spilled its header's bytes
/// into a fifth, tiny record that cost a second write, and a wake-up, at every TLS hop.
pub const DATA_MESSAGE: usize = MAX_DATA_MESSAGE - 8;
/// The status a device accepts a stream request with.
pub const ACCEPT: u16 = 200;
/// The device's "no" (any status but [`ACCEPT`] is one; this is the one sent).
pub const REJECT: u16 = 400;

/// Why an MQTT topic is not the stream request or response it should be.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TopicError {
    /// Not under `$iothub/streams/POST/`.
    #[error("topic '{0}' is not a stream request")]
    NotStreamRequest(String),
    /// Not under `$iothub/streams/res/`.
    #[error("topic '{0}' is not a stream response")]
    NotStreamResponse(String),
    /// A property the request needs is absent.
    #[error("stream request topic lacks {0}")]
    Missing(&'static str),
    /// The stream name is not a valid one.
    #[error("stream request topic has a bad stream name")]
    BadName,
    /// A property does not decode.
    #[error("stream request topic has a property that is not percent-encoded UTF-8")]
    BadEncoding,
}

/// A stream request as a device receives it over MQTT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRequest {
    /// The stream name the service asked for.
    pub name: String,
    /// The request id the answer must carry.
    pub rid: String,
    /// The stream's `wss://` URL on the streaming endpoint.
    pub url: String,
    /// The device side's one-time stream token.
    pub auth: Secret,
    /// The hub takes a reason with a rejection ([`REASON_PROPERTY`]).
    pub wants_reason: bool,
}

/// MQTT user name a device connects with.
pub fn mqtt_username(host: &str, device_id: &str) -> String {
    format!("{host}/{device_id}/?api-version={API_VERSION}")
}

/// Splits `a=1&b=2` into decoded pairs; a missing `?` before it is tolerated by the callers.
fn properties(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query.split('&').filter_map(|p| p.split_once('='))
}

/// Parses `$iothub/streams/POST/<name>/?$rid=..&$url=..&$auth=..`; unknown properties
/// (such as `$ip`) are ignored and the `?` may be missing.
pub fn parse_stream_request(topic: &str) -> Result<StreamRequest, TopicError> {
    let rest = topic
        .strip_prefix(STREAM_REQUEST_PREFIX)
        .ok_or_else(|| TopicError::NotStreamRequest(truncate(topic)))?;
    let (name, query) = rest.split_once('/').unwrap_or((rest, ""));
    let query = query.strip_prefix('?').unwrap_or(query);
    if !valid_stream_name(name) {
        return Err(TopicError::BadName);
    }
    let (mut rid, mut url, mut auth, mut reason) = (None, None, None, None);
    for (k, v) in properties(query) {
        let slot = match k {
            "$rid" => &mut rid,
            "$url" => &mut url,
            "$auth" => &mut auth,
            REASON_PROPERTY => &mut reason,
            _ => continue,
        };
        *slot = Some(url_decode(v).map_err(|_| TopicError::BadEncoding)?);
    }
    Ok(StreamRequest {
        name: name.to_string(),
        rid: rid
            .filter(|r| !r.is_empty())
            .ok_or(TopicError::Missing("$rid"))?,
        url: url.ok_or(TopicError::Missing("$url"))?,
        auth: Secret::new(auth.ok_or(TopicError::Missing("$auth"))?),
        wants_reason: reason.as_deref() == Some("1"),
    })
}

/// The topic our hub publishes a stream request on; it takes a reason with a rejection.
pub fn stream_request_topic(name: &str, rid: &str, url: &str, auth: &Secret) -> Secret {
    Secret::new(format!(
        "{STREAM_REQUEST_PREFIX}{name}/?$rid={}&$url={}&$auth={}&{REASON_PROPERTY}=1",
        url_encode(rid),
        url_encode(url),
        url_encode(auth.expose())
    ))
}

/// A rejection's reason made fit to log, store and show: valid UTF-8, control characters
/// (which could forge log lines or drive a terminal) as spaces, bidirectional overrides
/// (which could make a line read other than it is) dropped, trimmed, at most
/// [`MAX_REASON`] bytes. `None` if nothing is left. The text comes from a device, so
/// every party applies this to what it receives, not only to what it sends.
pub fn clean_reason(raw: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let mut clean = String::with_capacity(text.len().min(MAX_REASON));
    for c in text.chars() {
        let c = match c {
            '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => continue,
            c if c.is_control() => ' ',
            c => c,
        };
        if clean.len() + c.len_utf8() > MAX_REASON {
            break;
        }
        clean.push(c);
    }
    let clean = clean.trim();
    (!clean.is_empty()).then(|| clean.to_string())
}

/// The topic a device answers a stream request on: 200 accepts, 400 rejects.
pub fn stream_response_topic(status: u16, rid: &str) -> String {
    format!("{STREAM_RESPONSE_PREFIX}{status}/?$rid={}", url_encode(rid))
}

/// Parses `$iothub/streams/res/<status>/?$rid=<rid>` into (status, rid).
pub fn parse_stream_response(topic: &str) -> Result<(u16, String), TopicError> {
    let bad = || TopicError::NotStreamResponse(truncate(topic));
    let rest = topic.strip_prefix(STREAM_RESPONSE_PREFIX).ok_or_else(bad)?;
    let (status, query) = rest.split_once('/').unwrap_or((rest, ""));
    let status = status.parse().map_err(|_| bad())?;
    let query = query.strip_prefix('?').unwrap_or(query);
    let rid = properties(query)
        .find(|(k, _)| *k == "$rid")
        .ok_or(TopicError::Missing("$rid"))?
        .1;
    Ok((
        status,
        url_decode(rid).map_err(|_| TopicError::BadEncoding)?,
    ))
}

/// Path and query of a service's stream request.
pub fn stream_request_path(device_id: &str, stream_name: &str) -> String {
    format!(
        "/twins/{}/streams/{}?api-version={API_VERSION}",
        url_encode(device_id),
        url_encode(stream_name)
    )
}

/// Splits `/twins/<device>/streams/<name>` (path only, no query) into decoded parts.
pub fn parse_stream_request_path(path: &str) -> Option<(String, String)> {
    let rest = path.strip_prefix("/twins/")?;
    let (device, rest) = rest.split_once('/')?;
    let name = rest.strip_prefix("streams/")?;
    if name.contains('/') {
        return None;
    }
    Some((url_decode(device).ok()?, url_decode(name).ok()?))
}

/// Splits `/twins/<device>/modules/<module>/streams/<name>` (a module identity's stream
/// request; path only) into decoded parts.
pub fn parse_module_stream_request_path(path: &str) -> Option<(String, String, String)> {
    let rest = path.strip_prefix("/twins/")?;
    let (device, rest) = rest.split_once('/')?;
    let (module, rest) = rest.strip_prefix("modules/")?.split_once('/')?;
    let name = rest.strip_prefix("streams/")?;
    if name.contains('/') {
        return None;
    }
    let decode = |s: &str| url_decode(s).ok();
    Some((decode(device)?, decode(module)?, decode(name)?))
}

/// Path and query of a service's stream request to a module identity.
pub fn module_stream_request_path(device_id: &str, module_id: &str, stream_name: &str) -> String {
    format!(
        "/twins/{}/modules/{}/streams/{}?api-version={API_VERSION}",
        url_encode(device_id),
        url_encode(module_id),
        url_encode(stream_name)
    )
}

/// A module identity's MQTT user name: `<host>/<deviceId>/<moduleId>/?api-version=…`
/// (its client id is `<deviceId>/<moduleId>`).
pub fn mqtt_module_username(host: &str, device_id: &str, module_id: &str) -> String {
    format!("{host}/{device_id}/{module_id}/?api-version={API_VERSION}")
}

/// Device ids: what Azure allows, less the characters that need quoting in topics and URLs.
/// `.` and `..` are refused: as a path segment (a token's `<host>/devices/<id>`, a REST
/// path) they would mean something else to anything that normalises the path.
pub fn valid_device_id(id: &str) -> bool {
    !id.is_empty()
        && id != "."
        && id != ".."
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':' | '@'))
}

/// Stream names travel inside a topic level, so no `/`, `+`, `#` or spaces.
pub fn valid_stream_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

fn truncate(s: &str) -> String {
    // Topics may carry a token after '?': never echo that part.
    let head = s.split('?').next().unwrap_or_default();
    head.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_request_topic_with_question_mark() {
        let t = "$iothub/streams/POST/ssh/?$rid=7&$url=wss%3A%2F%2Fhub%3A8443%2Fbridges%2Fab%3Fx%3D1&$auth=tok%2Bx";
        let r = parse_stream_request(t).unwrap();
        assert_eq!(r.name, "ssh");
        assert_eq!(r.rid, "7");
        assert_eq!(r.url, "wss://hub:8443/bridges/ab?x=1");
        assert_eq!(r.auth.expose(), "tok+x");
    }

    #[test]
    fn parses_request_topic_without_question_mark_and_ignores_ip() {
        let t = "$iothub/streams/POST/rdp/$rid=9&$ip=10.0.0.1&$url=wss%3A%2F%2Fh%2Fb&$auth=a";
        let r = parse_stream_request(t).unwrap();
        assert_eq!(
            (r.name.as_str(), r.rid.as_str(), r.url.as_str()),
            ("rdp", "9", "wss://h/b")
        );
    }

    #[test]
    fn rejects_bad_request_topics_without_echoing_tokens() {
        assert_eq!(
            parse_stream_request("$iothub/streams/POST/ssh/?$url=u&$auth=a"),
            Err(TopicError::Missing("$rid"))
        );
        assert_eq!(
            parse_stream_request("$iothub/streams/POST/ssh/?$rid=1&$auth=a"),
            Err(TopicError::Missing("$url"))
        );
        assert_eq!(
            parse_stream_request("$iothub/streams/POST//?$rid=1"),
            Err(TopicError::BadName)
        );
        let err = parse_stream_request("devices/x/?$auth=SECRET").unwrap_err();
        assert!(!err.to_string().contains("SECRET"));
        assert_eq!(
            parse_stream_request("$iothub/streams/POST/ssh/?$rid=1&$url=%FF&$auth=a"),
            Err(TopicError::BadEncoding)
        );
    }

    #[test]
    fn round_trips_request_and_response_topics() {
        let auth = Secret::new("a&b=c");
        let topic = stream_request_topic("ssh", "42", "wss://h:1/bridges/x", &auth);
        let r = parse_stream_request(topic.expose()).unwrap();
        assert_eq!(
            (r.rid.as_str(), r.url.as_str(), r.auth.expose()),
            ("42", "wss://h:1/bridges/x", "a&b=c")
        );

        assert_eq!(
            stream_response_topic(200, "42"),
            "$iothub/streams/res/200/?$rid=42"
        );
        assert_eq!(
            parse_stream_response("$iothub/streams/res/400/?$rid=42"),
            Ok((400, "42".into()))
        );
        assert_eq!(
            parse_stream_response("$iothub/streams/res/200/$rid=5"),
            Ok((200, "5".into()))
        );
        assert!(parse_stream_response("$iothub/streams/res/abc/?$rid=1").is_err());
    }

    #[test]
    fn our_request_topic_asks_for_a_reason_and_azure_s_does_not() {
        let topic = stream_request_topic("ssh", "42", "wss://h:1/bridges/x", &Secret::new("t"));
        assert!(topic.expose().ends_with("&$x-reason=1"));
        let ours = parse_stream_request(topic.expose()).unwrap();
        assert!(ours.wants_reason);
        assert_eq!((ours.name.as_str(), ours.rid.as_str()), ("ssh", "42"));

        let azure = "$iothub/streams/POST/ssh/?$rid=42&$url=wss%3A%2F%2Fh%2Fb&$auth=t&$ip=10.0.0.1";
        assert!(!parse_stream_request(azure).unwrap().wants_reason);
        // Only the value we send turns it on; the property may sit anywhere.
        let other = "$iothub/streams/POST/ssh/?$x-reason=0&$rid=1&$url=u&$auth=t";
        assert!(!parse_stream_request(other).unwrap().wants_reason);
        let first = "$iothub/streams/POST/ssh/?$x-reason=1&$rid=1&$url=u&$auth=t";
        assert!(parse_stream_request(first).unwrap().wants_reason);
    }

    #[test]
    fn reasons_are_cleaned_and_capped() {
        assert_eq!(clean_reason(b""), None);
        assert_eq!(clean_reason(b" \r\n\t "), None);
        assert_eq!(
            clean_reason(b"cannot connect\r\nto\x1b[31m target").as_deref(),
            Some("cannot connect  to [31m target")
        );
        assert_eq!(
            clean_reason("a\u{202e}b\u{85}c".as_bytes()).as_deref(),
            Some("ab c")
        );
        assert_eq!(
            clean_reason(b"bad \xff utf8").as_deref(),
            Some("bad \u{fffd} utf8")
        );
        let long = clean_reason("é".repeat(400).as_bytes()).unwrap();
        assert_eq!(long.len(), MAX_REASON);
        assert!(long.chars().all(|c| c == 'é'));
        let odd = clean_reason(format!("x{}", "é".repeat(400)).as_bytes()).unwrap();
        assert!(odd.len() <= MAX_REASON && odd.len() > MAX_REASON - 2);
    }

    #[test]
    fn header_names_and_paths_match_azure() {
        assert_eq!(
            HEADER_CONNECT_TIMEOUT,
            "iothub-streaming-connect-timeout-in-seconds"
        );
        assert_eq!(
            HEADER_RESPONSE_TIMEOUT,
            "iothub-streaming-response-timeout-in-seconds"
        );
        assert_eq!(HEADER_IS_ACCEPTED, "iothub-streaming-is-accepted");
        assert_eq!(HEADER_URL, "iothub-streaming-url");
        assert_eq!(HEADER_AUTH_TOKEN, "iothub-streaming-auth-token");
        assert_eq!(
            stream_request_path("dev 1", "ssh"),
            "/twins/dev%201/streams/ssh?api-version=2020-09-30"
        );
        assert_eq!(
            parse_stream_request_path("/twins/dev%201/streams/ssh"),
            Some(("dev 1".into(), "ssh".into()))
        );
        assert_eq!(parse_stream_request_path("/twins/d/streams/a/b"), None);
        assert_eq!(
            parse_module_stream_request_path("/twins/d%201/modules/m.1/streams/ssh"),
            Some(("d 1".into(), "m.1".into(), "ssh".into()))
        );
        assert_eq!(
            parse_stream_request_path("/twins/d/modules/m/streams/ssh"),
            None
        );
        for bad in [
            "/twins/d/modules/m/streams/a/b",
            "/twins/d/modules/streams/ssh",
            "/twins/d/streams/ssh",
            "/twins/d/modules/m/x/ssh",
        ] {
            assert_eq!(parse_module_stream_request_path(bad), None, "{bad}");
        }
        assert_eq!(
            module_stream_request_path("d", "m", "ssh"),
            format!("/twins/d/modules/m/streams/ssh?api-version={API_VERSION}")
        );
        assert_eq!(mqtt_username("h:1", "d"), "h:1/d/?api-version=2020-09-30");
    }

    #[test]
    fn device_ids_are_checked() {
        for good in [
            "dev1",
            "a.b",
            "...",
            ".x",
            "x..",
            "d-1_2:3@4",
            &"a".repeat(128),
        ] {
            assert!(valid_device_id(good), "{good}");
        }
        for bad in [
            ".",
            "..",
            "",
            "a/b",
            "a b",
            "a%2F",
            "a\nb",
            &"a".repeat(129),
        ] {
            assert!(!valid_device_id(bad), "{bad}");
        }
    }
}
