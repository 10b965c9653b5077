//! Connection strings come from users and the environment.
#![no_main]

use device_streams_protocol::connection_string::{DeviceConnectionString, ServiceConnectionString};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cs) = s.parse::<DeviceConnectionString>() {
        let again: DeviceConnectionString = cs.to_secret_string().expose().parse().expect("round trip");
        assert_eq!((again.host, again.device_id), (cs.host, cs.device_id));
    }
    if let Ok(cs) = s.parse::<ServiceConnectionString>() {
        let again: ServiceConnectionString = cs.to_secret_string().expose().parse().expect("round trip");
        assert_eq!((again.host, again.policy), (cs.host, cs.policy));
    }
});
