//! The device's and the hub's MQTT topic parsers: whatever the other side publishes.
#![no_main]

use device_streams_protocol::wire::{
    clean_reason, parse_stream_request, parse_stream_request_path, parse_stream_response,
    stream_request_topic, stream_response_topic, MAX_REASON,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A rejection's reason is a device's payload, any bytes at all.
    if let Some(reason) = clean_reason(data) {
        assert!(reason.len() <= MAX_REASON && !reason.chars().any(char::is_control));
    }
    let Ok(topic) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(req) = parse_stream_request(topic) {
        // What parses must survive a round trip through the hub's encoder.
        let again = stream_request_topic(&req.name, &req.rid, &req.url, &req.auth);
        let back = parse_stream_request(again.expose()).expect("re-encoded request parses");
        assert_eq!((back.name, back.rid, back.url), (req.name, req.rid, req.url));
        assert_eq!(back.auth.expose(), req.auth.expose());
        assert!(back.wants_reason);
    }
    if let Ok((status, rid)) = parse_stream_response(topic) {
        let again = stream_response_topic(status, &rid);
        assert_eq!(parse_stream_response(&again).expect("re-encoded answer parses"), (status, rid));
    }
    let _ = parse_stream_request_path(topic);
});
