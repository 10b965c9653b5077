//! A stream's whole life in the hub, from a service's request to its last relayed byte.
//!
//! - [`request`]: `POST /twins/{id}/streams/{name}`: authenticate the caller, check the
//!   request's form, forward it to the node holding the device (cluster mode) or ask here.
//! - [`ask`]: ask the device here: its record, the device's state and the limits, the
//!   MQTT request and answer, and the connect window that follows an accept.
//! - [`table`]: streams awaiting their two WebSockets, their single-use tokens, and the
//!   limits on how many there are.
//! - [`endpoint`]: `GET /bridges/{id}`: the streaming endpoint, where each side's
//!   WebSocket arrives and meets the other.
//! - [`relay`]: the bytes between the two WebSockets, and why a relay ended.
//! - [`fast`]: the negotiated fast path: services' warm connections and devices' standby
//!   connections, a stream in about two round trips.
//! - [`record`]: the stream's activity record, written exactly once when it ends,
//!   whichever path ended it.

pub mod ask;
pub mod endpoint;
pub mod fast;
pub mod record;
pub mod relay;
pub mod request;
pub mod table;

pub use record::{Recorder, StreamRecord};
pub use table::{ClaimError, Grant, LimitError, Side, Slot, StreamInfo, Streams};
