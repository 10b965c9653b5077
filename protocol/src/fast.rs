//! The fast path: our extension that opens a stream in about two round trips instead of
//! Azure's five to eight, negotiated so that Azure's hub and Microsoft's SDK clients
//! never see it.
//!
//! Azure's way costs a REST request that waits for the device's MQTT answer, then a
//! WebSocket per side to the streaming endpoint. On the fast path each proxy holds
//! authenticated WebSockets to the hub ahead of need, and the first bytes ride with the
//! request:
//! - a service keeps *warm* connections at [`OPEN_PATH`] (service SAS in the upgrade's
//!   `Authorization`); for a stream it sends one [`Message::Open`] and at once, without
//!   waiting, the local connection's first bytes (at most [`MAX_EARLY_BYTES`]);
//! - a device keeps *standby* connections at [`STANDBY_PATH`]`/<device>[/<module>]`
//!   (device SAS), bound to its control session; the hub hands a stream to one with a
//!   [`Message::Offer`] naming the stream, with the service's first bytes right behind
//!   it. The device answers [`Message::Accept`] (then data) or [`Message::Reject`]; it
//!   reads those bytes only once it has accepted;
//! - the hub answers the service [`Message::Accepted`] (then data),
//!   [`Message::Rejected`] (the device's reason), [`Message::Refused`] (status and a
//!   message naming the device and the cause, as its REST errors), or
//!   [`Message::Elsewhere`] (this hub cannot carry it here: ask Azure's way);
//! - a device with no standby connection (Microsoft's SDKs, an empty pool) gets Azure's
//!   MQTT request, and the hub pairs its `/bridges/` WebSocket with the warm one.
//!
//! Every connection carries at most one stream. Control messages are WebSocket text
//! messages of at most [`MAX_CONTROL_MESSAGE`] bytes, words separated by one space, each
//! argument percent-encoded; data is binary, as on every stream.
//!
//! Negotiation: our hub says [`FAST_HEADER`]`: 1` in its 101 reply to MQTT over
//! WebSocket and in its answers to stream requests. Azure never sends it, so a proxy
//! that has not seen it behaves exactly as Azure's protocol says.

use crate::sas::{url_decode, url_encode};

/// In our hub's replies (MQTT-over-WebSocket 101, stream request answers): it serves the
/// fast path. Azure's hub never sends it.
pub const FAST_HEADER: &str = "x-device-streams-fast";
/// A service's warm connection: a WebSocket upgrade with the service SAS. `$x-` keeps it
/// apart from every path Azure serves (`$iothub/…`, `/twins/…`, `/bridges/…`).
pub const OPEN_PATH: &str = "/$x-device-streams/open";
/// A device's standby connection: `STANDBY_PATH/<device>` or `STANDBY_PATH/<device>/<module>`,
/// each percent-encoded, with the device's (or module's) SAS.
pub const STANDBY_PATH: &str = "/$x-device-streams/standby";
/// Largest control message, in bytes: ids, a stream name and a reason fit many times.
pub const MAX_CONTROL_MESSAGE: usize = 1024;
/// Most bytes a service sends ahead of the hub's answer; the rest waits for it.
pub const MAX_EARLY_BYTES: usize = 64 * 1024;

/// Which way the hub reached the device for a fast-path stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Over one of the device's standby connections: one round trip to the device.
    Standby,
    /// Azure's way: an MQTT request, then the device's `/bridges/` WebSocket.
    Mqtt,
}

impl Route {
    /// The word on the wire, in records and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Standby => "standby",
            Route::Mqtt => "mqtt",
        }
    }
}

/// One control message of the fast path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Service → hub: open a stream named `stream` to `device` (or its `module`).
    Open {
        /// The device.
        device: String,
        /// The device's module identity, if the stream goes there.
        module: Option<String>,
        /// The stream name the device decides by.
        stream: String,
    },
    /// Hub → service: the device accepted; what follows is the stream's data.
    Accepted(Route),
    /// Hub → service: the device said no, with its reason if it gave one.
    Rejected(Option<String>),
    /// Hub → service: the hub said no: an HTTP status as its REST answer would carry,
    /// and a message naming the device and the cause.
    Refused {
        /// As the REST endpoint's status for the same cause (404 offline, 429 limited…).
        status: u16,
        /// Names the device and the cause.
        message: String,
    },
    /// Hub → service: not on this connection (the device is held by another cluster
    /// node): ask Azure's way, which reaches it.
    Elsewhere,
    /// Hub → device: a stream named `stream` for you; the service's first bytes follow.
    Offer {
        /// The stream name.
        stream: String,
    },
    /// Device → hub: accepted; what follows is the stream's data.
    Accept,
    /// Device → hub: refused, with a reason for the service.
    Reject(String),
}

/// Why a text message is not a control message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a fast-path control message: {0}")]
pub struct BadMessage(&'static str);

/// An absent argument: empty (no id or reason is).
const NONE: &str = "";

fn opt(v: &Option<String>) -> String {
    v.as_deref().map_or_else(|| NONE.to_string(), url_encode)
}

impl Message {
    /// The message as its text frame carries it.
    pub fn encode(&self) -> String {
        match self {
            Message::Open {
                device,
                module,
                stream,
            } => format!(
                "open {} {} {}",
                url_encode(device),
                opt(module),
                url_encode(stream)
            ),
            Message::Accepted(route) => format!("accepted {}", route.as_str()),
            Message::Rejected(reason) => format!("rejected {}", opt(reason)),
            Message::Refused { status, message } => {
                format!("refused {status} {}", url_encode(message))
            }
            Message::Elsewhere => "elsewhere".into(),
            Message::Offer { stream } => format!("offer {}", url_encode(stream)),
            Message::Accept => "accept".into(),
            Message::Reject(reason) => format!("reject {}", url_encode(reason)),
        }
    }

    /// Reads a control message; reasons and messages come back cleaned
    /// ([`crate::wire::clean_reason`]), since the other end may not be trusted with them.
    pub fn parse(text: &str) -> Result<Message, BadMessage> {
        if text.len() > MAX_CONTROL_MESSAGE {
            return Err(BadMessage("too long"));
        }
        let mut words = text.split(' ');
        let kind = words.next().unwrap_or_default();
        let mut arg = || -> Result<String, BadMessage> {
            let w = words.next().ok_or(BadMessage("an argument is missing"))?;
            url_decode(w).map_err(|_| BadMessage("an argument is not percent-encoded UTF-8"))
        };
        let clean = |s: String| crate::wire::clean_reason(s.as_bytes());
        let message = match kind {
            "open" => {
                let (device, module, stream) = (arg()?, arg()?, arg()?);
                Message::Open {
                    device,
                    module: (module != NONE).then_some(module),
                    stream,
                }
            }
            "accepted" => match arg()?.as_str() {
                "standby" => Message::Accepted(Route::Standby),
                "mqtt" => Message::Accepted(Route::Mqtt),
                _ => return Err(BadMessage("unknown route")),
            },
            "rejected" => Message::Rejected(Some(arg()?).filter(|r| r != NONE).and_then(clean)),
            "refused" => Message::Refused {
                status: arg()?.parse().map_err(|_| BadMessage("bad status"))?,
                message: clean(arg()?).unwrap_or_else(|| "no details given".into()),
            },
            "elsewhere" => Message::Elsewhere,
            "offer" => Message::Offer { stream: arg()? },
            "accept" => Message::Accept,
            "reject" => Message::Reject(clean(arg()?).unwrap_or_default()),
            _ => return Err(BadMessage("unknown kind")),
        };
        Ok(message)
    }
}

/// The standby path for a device, or for a device's module identity.
pub fn standby_path(device: &str, module: Option<&str>) -> String {
    match module {
        Some(m) => format!("{STANDBY_PATH}/{}/{}", url_encode(device), url_encode(m)),
        None => format!("{STANDBY_PATH}/{}", url_encode(device)),
    }
}

/// Splits a standby path (path only) into the device and module it names.
pub fn parse_standby_path(path: &str) -> Option<(String, Option<String>)> {
    let rest = path.strip_prefix(STANDBY_PATH)?.strip_prefix('/')?;
    let mut parts = rest.split('/');
    let device = url_decode(parts.next()?).ok()?;
    let module = match parts.next() {
        Some(m) => Some(url_decode(m).ok()?),
        None => None,
    };
    match parts.next() {
        Some(_) => None,
        None => Some((device, module)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let all = [
            Message::Open {
                device: "dev 1".into(),
                module: Some("m/1".into()),
                stream: "ssh".into(),
            },
            Message::Open {
                device: "d".into(),
                module: None,
                stream: "rdp".into(),
            },
            Message::Accepted(Route::Standby),
            Message::Accepted(Route::Mqtt),
            Message::Rejected(Some("no target is mapped for stream 'x'".into())),
            Message::Rejected(None),
            Message::Refused {
                status: 404,
                message: "device 'd' is not connected to the hub".into(),
            },
            Message::Elsewhere,
            Message::Offer {
                stream: "ssh".into(),
            },
            Message::Accept,
            Message::Reject("at its limit".into()),
        ];
        for m in all {
            assert_eq!(Message::parse(&m.encode()), Ok(m.clone()), "{m:?}");
        }
    }

    #[test]
    fn bad_messages_are_refused_and_reasons_cleaned() {
        for bad in [
            "",
            "open d",
            "accepted x",
            "refused abc m",
            "nope",
            "offer %FF",
        ] {
            assert!(Message::parse(bad).is_err(), "{bad}");
        }
        assert!(Message::parse(&"a".repeat(MAX_CONTROL_MESSAGE + 1)).is_err());
        let forged = Message::Reject("line\r\nforged".into()).encode();
        assert_eq!(
            Message::parse(&forged),
            Ok(Message::Reject("line  forged".into()))
        );
    }

    #[test]
    fn standby_paths_name_the_identity() {
        assert_eq!(
            standby_path("d 1", None),
            "/$x-device-streams/standby/d%201"
        );
        assert_eq!(
            parse_standby_path(&standby_path("d 1", Some("m"))),
            Some(("d 1".into(), Some("m".into())))
        );
        assert_eq!(
            parse_standby_path("/$x-device-streams/standby/d"),
            Some(("d".into(), None))
        );
        assert_eq!(parse_standby_path("/$x-device-streams/standby/a/b/c"), None);
        assert_eq!(parse_standby_path("/$x-device-streams/standbyx"), None);
    }
}
