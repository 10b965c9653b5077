//! X.509 device authentication, Azure's two kinds: `selfSigned` (the device's certificate
//! is known by its thumbprint) and `certificateAuthority` (the certificate chains to a CA
//! registered with `stream-hub ca add`, and its subject CN is the device id).
//!
//! The TLS ports ask every client for a certificate but take any well-formed chain whose
//! key signs the handshake ([`AnyClientCert`]): who the certificate may stand for is only
//! known at CONNECT, from the registry, which can change under a running hub (a CA added,
//! a thumbprint replaced). [`check`] makes that decision.

use std::sync::Arc;

use rustls::{
    client::danger::HandshakeSignatureValid,
    crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider},
    pki_types::{CertificateDer, UnixTime},
    server::danger::{ClientCertVerified, ClientCertVerifier},
    DigitallySignedStruct, DistinguishedName, SignatureScheme,
};

use crate::registry::{CaCert, DeviceAuth};

/// The client's certificate chain (leaf first) as its TLS handshake presented it; empty
/// when it presented none.
#[derive(Clone, Debug, Default)]
pub struct PeerCerts(pub Arc<Vec<CertificateDer<'static>>>);

impl PeerCerts {
    /// The chain of a finished server-side handshake.
    pub fn of(conn: &rustls::ServerConnection) -> PeerCerts {
        let chain = conn
            .peer_certificates()
            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
            .unwrap_or_default();
        PeerCerts(Arc::new(chain))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum X509Error {
    #[error(
        "the device authenticates with an X.509 certificate and its TLS connection presented none"
    )]
    NoCertificate,
    #[error("the certificate is not one the hub can read: {0}")]
    Unreadable(String),
    #[error("the certificate expired at {0}")]
    Expired(String),
    #[error("the certificate is not valid until {0}")]
    NotYetValid(String),
    #[error("the certificate's thumbprint (SHA-256 {0}) is neither of the device's registered thumbprints")]
    WrongThumbprint(String),
    #[error("no CA is registered (stream-hub ca add)")]
    NoCa,
    #[error("the certificate does not chain to a registered CA: {0}")]
    UntrustedIssuer(String),
    #[error("the certificate's subject CN {0:?} is not the device id")]
    WrongCn(String),
}

/// What an X.509 device proved: the thumbprint that matched, or the CA its chain reached.
/// Held by its session so that replacing the thumbprint or deleting the CA cuts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proof {
    Thumbprint(String),
    Ca(String),
}

impl Proof {
    /// The session's credential as [`crate::sessions`] compares them: never equal to a
    /// SAS key (base64 has no `:`).
    pub fn credential(&self) -> String {
        match self {
            Proof::Thumbprint(t) => format!("x509-thumbprint:{t}"),
            Proof::Ca(name) => format!("x509-ca:{name}"),
        }
    }
}

/// Checks `chain` (leaf first) against an X.509 device's registration at `now`.
pub fn check(
    chain: &[CertificateDer<'_>],
    device_id: &str,
    auth: &DeviceAuth,
    cas: &[CaCert],
    now: UnixTime,
) -> Result<Proof, X509Error> {
    let leaf = chain.first().ok_or(X509Error::NoCertificate)?;
    let cert =
        webpki::EndEntityCert::try_from(leaf).map_err(|e| X509Error::Unreadable(e.to_string()))?;
    match auth {
        DeviceAuth::Sas => Err(X509Error::Unreadable("the device uses SAS".into())),
        DeviceAuth::SelfSigned { primary, secondary } => {
            check_validity(&cert, now)?;
            let (sha1, sha256) = thumbprints(leaf);
            [primary, secondary]
                .into_iter()
                .flatten()
                .find(|t| **t == sha1 || **t == sha256)
                .map(|t| Proof::Thumbprint(t.clone()))
                .ok_or(X509Error::WrongThumbprint(sha256))
        }
        DeviceAuth::CertificateAuthority => {
            let ca = chain_to_ca(&cert, &chain[1..], cas, now)?;
            match subject_cn(cert.subject()) {
                Some(cn) if cn == device_id => Ok(Proof::Ca(ca)),
                Some(cn) => Err(X509Error::WrongCn(cn)),
                None => Err(X509Error::WrongCn(String::new())),
            }
        }
    }
}

/// The validity period alone: verifying against no trust anchor checks the end entity's
/// own properties (dates first) before it looks for an issuer, which a thumbprint device
/// does not need.
fn check_validity(cert: &webpki::EndEntityCert<'_>, now: UnixTime) -> Result<(), X509Error> {
    let algs = device_streams_protocol::tls::provider()
        .signature_verification_algorithms
        .all;
    let usage = webpki::KeyUsage::client_auth();
    match cert.verify_for_usage(algs, &[], &[], now, usage, None, None) {
        Err(e) => time_error(&e).map_or(Ok(()), Err),
        Ok(_) => Ok(()),
    }
}

fn time_error(e: &webpki::Error) -> Option<X509Error> {
    match e {
        webpki::Error::CertExpired { not_after, .. } => {
            Some(X509Error::Expired(rfc3339(*not_after)))
        }
        webpki::Error::CertNotValidYet { not_before, .. } => {
            Some(X509Error::NotYetValid(rfc3339(*not_before)))
        }
        _ => None,
    }
}

fn rfc3339(t: UnixTime) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.as_secs());
    humantime::format_rfc3339_seconds(at).to_string()
}

/// Verifies the chain as rustls' own client verifier does, against each registered CA;
/// returns the name of the CA it reached.
fn chain_to_ca(
    cert: &webpki::EndEntityCert<'_>,
    intermediates: &[CertificateDer<'_>],
    cas: &[CaCert],
    now: UnixTime,
) -> Result<String, X509Error> {
    if cas.is_empty() {
        return Err(X509Error::NoCa);
    }
    let algs = device_streams_protocol::tls::provider()
        .signature_verification_algorithms
        .all;
    let mut last = None;
    for ca in cas {
        let der = CertificateDer::from(ca.der.as_slice());
        let anchor = match webpki::anchor_from_trusted_cert(&der) {
            Ok(anchor) => anchor,
            Err(e) => {
                tracing::warn!(ca = %ca.name, "registered CA is not usable: {e}");
                continue;
            }
        };
        let usage = webpki::KeyUsage::client_auth();
        match cert.verify_for_usage(algs, &[anchor], intermediates, now, usage, None, None) {
            Ok(_) => return Ok(ca.name.clone()),
            Err(e) => match time_error(&e) {
                Some(time) => return Err(time),
                None => last = Some(e),
            },
        }
    }
    let why = last.map_or("no registered CA is usable".into(), |e| e.to_string());
    Err(X509Error::UntrustedIssuer(why))
}

/// Lower-case hex SHA-1 and SHA-256 of the DER certificate: the two thumbprints Azure takes.
pub fn thumbprints(der: &[u8]) -> (String, String) {
    use ring::digest::{digest, SHA1_FOR_LEGACY_USE_ONLY, SHA256};
    let hex = |d: ring::digest::Digest| d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    (
        hex(digest(&SHA1_FOR_LEGACY_USE_ONLY, der)),
        hex(digest(&SHA256, der)),
    )
}

/// A CA certificate an admin registers: it must parse as a trust anchor.
pub fn check_ca(der: &CertificateDer<'_>) -> Result<(), String> {
    webpki::anchor_from_trusted_cert(der)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// When a DER certificate's validity ends (`notAfter`), in Unix seconds: an X.509
/// session lasts no longer than its certificate, as a SAS session no longer than its token.
pub fn not_after(der: &[u8]) -> Option<u64> {
    let (0x30, cert, _) = der_next(der)? else {
        return None;
    };
    let (0x30, mut tbs, _) = der_next(cert)? else {
        return None;
    };
    // version [0] (optional), serialNumber, signature, issuer, then validity.
    if tbs.first() == Some(&0xa0) {
        tbs = der_next(tbs)?.2;
    }
    for _ in 0..3 {
        tbs = der_next(tbs)?.2;
    }
    let (0x30, validity, _) = der_next(tbs)? else {
        return None;
    };
    let (_, _, rest) = der_next(validity)?;
    let (tag, time, _) = der_next(rest)?;
    let text = std::str::from_utf8(time).ok()?;
    let full = match tag {
        // UTCTime: two-digit years 50-99 are 19xx, 00-49 20xx (RFC 5280).
        0x17 => match text.get(..2)?.parse::<u32>().ok()? {
            y if y >= 50 => format!("19{text}"),
            _ => format!("20{text}"),
        },
        0x18 => text.to_string(),
        _ => return None,
    };
    let digits = full.strip_suffix('Z')?;
    let field = |range: std::ops::Range<usize>| digits.get(range)?.parse::<u64>().ok();
    let (year, month, day) = (field(0..4)?, field(4..6)?, field(6..8)?);
    let (hour, minute, second) = (field(8..10)?, field(10..12)?, field(12..14)?);
    let days = days_from_civil(year, month, day)?;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: u64, month: u64, day: u64) -> Option<u64> {
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || year < 1970 {
        return None;
    }
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).checked_sub(719_468)
}

/// The first commonName (2.5.4.3) in a Name's contents (a sequence of RDN sets).
fn subject_cn(name: &[u8]) -> Option<String> {
    const CN: &[u8] = &[0x55, 0x04, 0x03];
    let mut rdns = name;
    while let Some((0x31, set, rest)) = der_next(rdns) {
        rdns = rest;
        let mut attrs = set;
        while let Some((0x30, attr, rest)) = der_next(attrs) {
            attrs = rest;
            let Some((0x06, oid, value)) = der_next(attr) else {
                continue;
            };
            // UTF8String, PrintableString, IA5String, TeletexString.
            if let (true, Some((0x0c | 0x13 | 0x16 | 0x14, text, _))) = (oid == CN, der_next(value))
            {
                return std::str::from_utf8(text).ok().map(str::to_string);
            }
        }
    }
    None
}

/// One DER element: its tag, its contents and what follows it.
fn der_next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        n if n < 0x80 => (usize::from(n), rest),
        0x81..=0x83 => {
            let n = usize::from(first - 0x80);
            let bytes = rest.get(..n)?;
            let len = bytes.iter().fold(0, |len, b| len << 8 | usize::from(*b));
            (len, &rest[n..])
        }
        _ => return None,
    };
    let contents = rest.get(..len)?;
    Some((tag, contents, &rest[len..]))
}

/// Asks every client for a certificate and takes any chain whose leaf parses and whose key
/// signs the handshake; a client may present none. Names no CAs in its request, since
/// which ones count is the registry's, at CONNECT.
#[derive(Debug)]
pub struct AnyClientCert {
    provider: Arc<CryptoProvider>,
}

impl AnyClientCert {
    pub fn new(provider: Arc<CryptoProvider>) -> Self {
        AnyClientCert { provider }
    }
}

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        webpki::EndEntityCert::try_from(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.provider.signature_verification_algorithms;
        verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.provider.signature_verification_algorithms;
        verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::normalize_thumbprint;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

    fn params(cn: &str, from: i32, to: i32) -> CertificateParams {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.not_before = rcgen::date_time_ymd(from, 1, 1);
        p.not_after = rcgen::date_time_ymd(to, 1, 1);
        p
    }

    fn self_signed(cn: &str, from: i32, to: i32) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        params(cn, from, to)
            .self_signed(&key)
            .unwrap()
            .der()
            .clone()
    }

    fn now() -> UnixTime {
        UnixTime::now()
    }

    #[test]
    fn thumbprint_devices_match_either_digest_within_the_validity_period() {
        let cert = self_signed("cam", 2000, 2100);
        let (sha1, sha256) = thumbprints(&cert);
        let upper = sha256.to_uppercase();
        let colons: String = sha1
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(":");
        for written in [upper, colons] {
            let t = normalize_thumbprint(&written).unwrap();
            let auth = DeviceAuth::SelfSigned {
                primary: None,
                secondary: Some(t.clone()),
            };
            let proof = check(std::slice::from_ref(&cert), "cam", &auth, &[], now()).unwrap();
            assert_eq!(proof, Proof::Thumbprint(t));
        }
        let other = DeviceAuth::SelfSigned {
            primary: Some("0".repeat(64)),
            secondary: None,
        };
        let err = check(std::slice::from_ref(&cert), "cam", &other, &[], now()).unwrap_err();
        assert_eq!(err, X509Error::WrongThumbprint(sha256));
        assert_eq!(
            check(&[], "cam", &other, &[], now()).unwrap_err(),
            X509Error::NoCertificate
        );

        for (cert, want) in [
            (self_signed("cam", 2001, 2002), "expired at 2002-01-01"),
            (self_signed("cam", 2090, 2100), "not valid until 2090-01-01"),
        ] {
            let auth = DeviceAuth::SelfSigned {
                primary: Some(thumbprints(&cert).1),
                secondary: None,
            };
            let err = check(&[cert], "cam", &auth, &[], now()).unwrap_err();
            assert!(err.to_string().contains(want), "{err}");
        }
        assert_eq!(normalize_thumbprint("abc"), None);
        assert_eq!(normalize_thumbprint(&"g".repeat(40)), None);
    }

    struct Ca {
        cert: rcgen::Certificate,
        key: KeyPair,
    }

    fn ca(cn: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = params(cn, 2000, 2100);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        Ca {
            cert: p.self_signed(&key).unwrap(),
            key,
        }
    }

    fn issued(ca: &Ca, cn: &str, from: i32, to: i32) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        let cert = params(cn, from, to).signed_by(&key, &ca.cert, &ca.key);
        cert.unwrap().der().clone()
    }

    #[test]
    fn ca_devices_need_a_chain_to_a_registered_ca_and_their_id_as_cn() {
        let (root, stranger) = (ca("root"), ca("stranger"));
        let registered = [CaCert {
            name: "root".into(),
            der: root.cert.der().to_vec(),
            added_at: 0,
        }];
        let auth = DeviceAuth::CertificateAuthority;
        let good = issued(&root, "cam", 2000, 2100);
        assert_eq!(
            check(
                std::slice::from_ref(&good),
                "cam",
                &auth,
                &registered,
                now()
            )
            .unwrap(),
            Proof::Ca("root".into())
        );
        let cases = [
            (
                good.clone(),
                "cam2",
                "subject CN \"cam\" is not the device id",
            ),
            (
                issued(&stranger, "cam", 2000, 2100),
                "cam",
                "does not chain to a registered CA",
            ),
            (
                issued(&root, "cam", 2001, 2002),
                "cam",
                "expired at 2002-01-01",
            ),
            (
                issued(&root, "cam", 2090, 2100),
                "cam",
                "not valid until 2090",
            ),
        ];
        for (cert, device, want) in cases {
            let err = check(&[cert], device, &auth, &registered, now()).unwrap_err();
            assert!(err.to_string().contains(want), "{err}");
        }
        let err = check(&[good], "cam", &auth, &[], now()).unwrap_err();
        assert_eq!(err, X509Error::NoCa);
    }

    #[test]
    fn not_after_reads_both_time_encodings() {
        // 2100-01-01 needs GeneralizedTime, 2030-06-01 is a UTCTime.
        let cert = self_signed("cam", 2000, 2100);
        assert_eq!(not_after(&cert), Some(4_102_444_800));
        let key = KeyPair::generate().unwrap();
        let mut p = params("cam", 2000, 2030);
        p.not_after = rcgen::date_time_ymd(2030, 6, 1);
        let cert = p.self_signed(&key).unwrap();
        assert_eq!(not_after(cert.der()), Some(1_906_502_400));
        assert_eq!(not_after(b"\x30\x00"), None);
        assert_eq!(days_from_civil(1970, 1, 1), Some(0));
        assert_eq!(days_from_civil(2000, 3, 1), Some(11_017));
    }

    #[test]
    fn the_cn_reader_takes_what_it_understands_and_nothing_else() {
        assert_eq!(subject_cn(&[]), None);
        assert_eq!(subject_cn(&[0x31, 0x05, 0x30]), None);
        // SET { SEQ { OID 2.5.4.3, UTF8String "ab" } }
        let name = [
            0x31, 0x0b, 0x30, 0x09, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x02, b'a', b'b',
        ];
        assert_eq!(subject_cn(&name).as_deref(), Some("ab"));
        assert_eq!(subject_cn(&name[..name.len() - 1]), None);
    }
}
