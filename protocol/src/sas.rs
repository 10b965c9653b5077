//! Shared access signature (SAS) tokens, as Azure IoT Hub issues and checks them:
//!
//! `SharedAccessSignature sr=<url-encoded resource>&sig=<url-encoded base64 HMAC>&se=<unix expiry>[&skn=<policy>]`
//!
//! The signature is HMAC-SHA256, keyed with the base64-decoded shared access key, over
//! `<sr as it appears in the token>\n<se>`: the *encoded* resource is what gets signed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::{engine::general_purpose::STANDARD, Engine};
use hmac::{Hmac, Mac};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::Secret;

const PREFIX: &str = "SharedAccessSignature ";

/// What Python's `urllib.parse.quote(s, safe="")` and .NET's `WebUtility.UrlEncode` keep
/// as is; everything else is percent-encoded (Azure's SDKs encode `sr` and `sig` this way).
const URL_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Why a SAS token could not be signed, parsed or verified. Never shows the signature or key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SasError {
    /// Not a `SharedAccessSignature ...` token.
    #[error("token does not start with 'SharedAccessSignature '")]
    NotSas,
    /// A required field is absent.
    #[error("token lacks its '{0}' field")]
    Missing(&'static str),
    /// Never names the field: a mangled token can put a piece of the signature before an `=`.
    #[error("token has a field other than sr, sig, se and skn")]
    UnknownField,
    /// A field is given twice.
    #[error("token has its '{0}' field twice")]
    Duplicate(&'static str),
    /// `se` is not a number.
    #[error("token's 'se' is not a unix time")]
    BadExpiry,
    /// A field does not decode.
    #[error("token's fields are not percent-encoded UTF-8")]
    BadEncoding,
    /// The key is not base64.
    #[error("shared access key is not valid base64")]
    BadKey,
    /// The signature is not the key's.
    #[error("token signature does not match")]
    BadSignature,
    /// The token's expiry has passed (by this many seconds).
    #[error("token expired {0}s ago")]
    Expired(u64),
}

/// Percent-encodes `s` as Azure's SDKs do for token fields.
pub fn url_encode(s: &str) -> String {
    utf8_percent_encode(s, URL_ENCODE).to_string()
}

/// Decodes a percent-encoded token field.
pub fn url_decode(s: &str) -> Result<String, SasError> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| SasError::BadEncoding)
}

/// The resource a device's token is for: `<host>/devices/<url-encoded id>`.
pub fn device_resource(host: &str, device_id: &str) -> String {
    format!("{host}/devices/{}", url_encode(device_id))
}

/// A module identity's SAS resource: `<host>/devices/<device>/modules/<module>`.
pub fn module_resource(host: &str, device_id: &str, module_id: &str) -> String {
    format!(
        "{host}/devices/{}/modules/{}",
        url_encode(device_id),
        url_encode(module_id)
    )
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn mac(key: &Secret, encoded_resource: &str, expiry: u64) -> Result<Hmac<Sha256>, SasError> {
    let key = STANDARD
        .decode(key.expose())
        .map_err(|_| SasError::BadKey)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|_| SasError::BadKey)?;
    mac.update(encoded_resource.as_bytes());
    mac.update(b"\n");
    mac.update(expiry.to_string().as_bytes());
    Ok(mac)
}

/// Signs a token for `resource` (not yet encoded), valid until `expiry` (unix seconds).
pub fn sign(
    resource: &str,
    key: &Secret,
    expiry: u64,
    policy: Option<&str>,
) -> Result<Secret, SasError> {
    let sr = url_encode(resource);
    let sig = STANDARD.encode(mac(key, &sr, expiry)?.finalize().into_bytes());
    let mut token = format!("{PREFIX}sr={sr}&sig={}&se={expiry}", url_encode(&sig));
    if let Some(policy) = policy {
        token.push_str("&skn=");
        token.push_str(&url_encode(policy));
    }
    Ok(Secret::new(token))
}

/// Signs a token valid for `ttl` from now.
pub fn sign_for(
    resource: &str,
    key: &Secret,
    ttl: Duration,
    policy: Option<&str>,
) -> Result<Secret, SasError> {
    sign(resource, key, unix_now() + ttl.as_secs(), policy)
}

/// A token's fields, split out but not yet checked against any key.
#[derive(Debug)]
pub struct SasToken {
    /// `sr` exactly as it appears in the token: the signed text.
    encoded_resource: String,
    /// `sr` decoded, e.g. `myhub.example.com/devices/dev1`.
    pub resource: String,
    signature: Vec<u8>,
    /// `se`: when the token expires, in seconds since the Unix epoch.
    pub expiry: u64,
    /// `skn`: the shared access policy that signed it, if any (services; devices sign
    /// with their own key).
    pub policy: Option<String>,
}

impl SasToken {
    /// Parses `SharedAccessSignature sr=…&sig=…&se=…[&skn=…]`, without verifying it.
    pub fn parse(token: &str) -> Result<SasToken, SasError> {
        let fields = token.trim().strip_prefix(PREFIX).ok_or(SasError::NotSas)?;
        let (mut sr, mut sig, mut se, mut skn) = (None, None, None, None);
        for field in fields.split('&') {
            // Strict: a field we would skip or a second `sr` could make the hub and a
            // reader of the token disagree about what it grants.
            let (name, value) = field.split_once('=').ok_or(SasError::UnknownField)?;
            let (slot, name) = match name {
                "sr" => (&mut sr, "sr"),
                "sig" => (&mut sig, "sig"),
                "se" => (&mut se, "se"),
                "skn" => (&mut skn, "skn"),
                _ => return Err(SasError::UnknownField),
            };
            if slot.replace(value).is_some() {
                return Err(SasError::Duplicate(name));
            }
        }
        let sr = sr.ok_or(SasError::Missing("sr"))?;
        let sig = url_decode(sig.ok_or(SasError::Missing("sig"))?)?;
        Ok(SasToken {
            encoded_resource: sr.to_string(),
            resource: url_decode(sr)?,
            signature: STANDARD.decode(sig).map_err(|_| SasError::BadEncoding)?,
            expiry: se
                .ok_or(SasError::Missing("se"))?
                .parse()
                .map_err(|_| SasError::BadExpiry)?,
            policy: skn.map(url_decode).transpose()?,
        })
    }

    /// Checks the signature with `key` (in constant time), then the expiry against `now`.
    pub fn verify(&self, key: &Secret, now: u64) -> Result<(), SasError> {
        let expected = mac(key, &self.encoded_resource, self.expiry)?
            .finalize()
            .into_bytes();
        if !bool::from(expected.as_slice().ct_eq(&self.signature)) {
            return Err(SasError::BadSignature);
        }
        if self.expiry <= now {
            return Err(SasError::Expired(now - self.expiry));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Computed with Python's hmac/hashlib/urllib, independently of this module:
    //   sr = quote(resource, safe=""); sig = b64(HMAC-SHA256(b64decode(key), sr + "\n" + se))
    const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

    #[test]
    fn signs_known_vectors() {
        let key = Secret::new(KEY);
        let t = sign(
            "myhub.azure-devices.net/devices/dev 1",
            &key,
            1_700_000_000,
            None,
        )
        .unwrap();
        assert_eq!(
            t.expose(),
            "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdev%201\
             &sig=NcT2lnsRG6UvL73kedJV4KCCH%2BFy%2F%2BM8oOHZLDfMfEQ%3D&se=1700000000"
        );
        let t = sign("localhost:8443", &key, 1_800_000_000, Some("service")).unwrap();
        assert_eq!(
            t.expose(),
            "SharedAccessSignature sr=localhost%3A8443\
             &sig=jsO5J5AYhXRfv6fUNaaCFwoW4jTAAZVhcEcisYyv7Bs%3D&se=1800000000&skn=service"
        );
    }

    #[test]
    fn parses_and_verifies_in_any_field_order() {
        let key = Secret::new(KEY);
        let t = SasToken::parse(
            "SharedAccessSignature skn=service&se=1800000000&sr=localhost%3A8443\
             &sig=jsO5J5AYhXRfv6fUNaaCFwoW4jTAAZVhcEcisYyv7Bs%3D",
        )
        .unwrap();
        assert_eq!(t.resource, "localhost:8443");
        assert_eq!(t.policy.as_deref(), Some("service"));
        t.verify(&key, 1_799_999_999).unwrap();
        assert_eq!(t.verify(&key, 1_800_000_010), Err(SasError::Expired(10)));
    }

    #[test]
    fn rejects_wrong_key_and_tampering() {
        let key = Secret::new(KEY);
        let other = Secret::new("b3RoZXIta2V5LW90aGVyLWtleS1vdGhlci1rZXkh");
        let good = sign("h/devices/d", &key, 2_000_000_000, None).unwrap();
        let t = SasToken::parse(good.expose()).unwrap();
        assert_eq!(t.verify(&other, 0), Err(SasError::BadSignature));
        let tampered = good.expose().replace("se=2000000000", "se=2000000001");
        let t = SasToken::parse(&tampered).unwrap();
        assert_eq!(t.verify(&key, 0), Err(SasError::BadSignature));
        assert_eq!(SasToken::parse("Bearer abc").unwrap_err(), SasError::NotSas);
        assert_eq!(
            SasToken::parse("SharedAccessSignature sr=a&se=1").unwrap_err(),
            SasError::Missing("sig")
        );
    }

    #[test]
    fn refuses_unknown_and_repeated_fields() {
        let key = Secret::new(KEY);
        let good = sign("h", &key, 2_000_000_000, Some("service")).unwrap();
        let good = good.expose();
        SasToken::parse(good).unwrap();
        for extra in ["&foo=bar", "&", "&sigX", "&SR=h", "&skn2=service"] {
            let err = SasToken::parse(&format!("{good}{extra}")).unwrap_err();
            assert_eq!(err, SasError::UnknownField, "{extra}");
            assert!(!err.to_string().contains("bar"));
        }
        for (extra, field) in [
            ("&sr=other", "sr"),
            ("&sig=AAAA", "sig"),
            ("&se=1", "se"),
            ("&skn=x", "skn"),
        ] {
            assert_eq!(
                SasToken::parse(&format!("{good}{extra}")).unwrap_err(),
                SasError::Duplicate(field)
            );
        }
    }

    #[test]
    fn device_resource_encodes_the_id() {
        assert_eq!(device_resource("h:1", "a b"), "h:1/devices/a%20b");
    }
}
