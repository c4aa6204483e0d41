//! The HMAC signatures of temporary URLs and form posts, keyed by an account's or container's `Temp-URL-Key`.
//!
//! A signature is hex (40 digits: SHA-1, 64: SHA-256, and for forms 128: SHA-512) or `<digest>:<base64>` (standard
//! or URL-safe alphabet, padding optional). Comparisons take constant time.

use hmac::Hmac;

/// The digests Swift allows by default, as `/info` lists them.
pub const ALLOWED_DIGESTS: &[&str] = &["sha1", "sha256", "sha512"];

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Digest {
    Sha1,
    Sha256,
    Sha512,
}

impl Digest {
    fn named(name: &str) -> Option<Digest> {
        match name {
            "sha1" => Some(Digest::Sha1),
            "sha256" => Some(Digest::Sha256),
            "sha512" => Some(Digest::Sha512),
            _ => None,
        }
    }

    /// HMAC of `body` under `key`.
    pub fn hmac(self, key: &[u8], body: &[u8]) -> Vec<u8> {
        fn run<M: hmac::Mac + hmac::KeyInit>(key: &[u8], body: &[u8]) -> Vec<u8> {
            let mut mac = <M as hmac::KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
            mac.update(body);
            mac.finalize().into_bytes().to_vec()
        }
        match self {
            Digest::Sha1 => run::<Hmac<sha1::Sha1>>(key, body),
            Digest::Sha256 => run::<Hmac<sha2::Sha256>>(key, body),
            Digest::Sha512 => run::<Hmac<sha2::Sha512>>(key, body),
        }
    }
}

/// A signature as a client gives it: its digest and raw bytes. `sha512_hex` also accepts 128 hex digits (forms do,
/// temporary URLs want SHA-512 signatures in base64). `None` when it cannot be a signature.
pub fn parse(sig: &str, sha512_hex: bool) -> Option<(Digest, Vec<u8>)> {
    if let Some((name, b64)) = sig.split_once(':') {
        let digest = Digest::named(name)?;
        let standard: String = if (b64.contains('-') || b64.contains('_')) && !(b64.contains('+') || b64.contains('/')) {
            b64.replace('-', "+").replace('_', "/")
        } else {
            b64.to_string()
        };
        use base64::Engine as _;
        let engine = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
                .with_decode_allow_trailing_bits(true),
        );
        let bytes = engine.decode(standard.trim_end_matches('=')).ok()?;
        return Some((digest, bytes));
    }
    let digest = match sig.len() {
        40 => Digest::Sha1,
        64 => Digest::Sha256,
        128 if sha512_hex => Digest::Sha512,
        _ => return None,
    };
    Some((digest, unhex(sig)?))
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// Whether `sig` is the HMAC of one of `bodies` under one of `keys`.
pub fn verify(digest: Digest, sig: &[u8], keys: &[String], bodies: &[String]) -> bool {
    let mut ok = false;
    for key in keys {
        for body in bodies {
            ok |= constant_time_eq(&digest.hmac(key.as_bytes(), body.as_bytes()), sig);
        }
    }
    ok
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A temporary URL's expiry: Unix seconds, or ISO 8601 UTC (`2030-01-02T03:04:05Z`).
pub fn parse_expires(s: &str) -> Option<i64> {
    if let Ok(n) = s.parse::<i64>() {
        return Some(n);
    }
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%SZ").ok().map(|t| t.and_utc().timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn hmacs_match_known_values() {
        // RFC 4231 test case 2 (key "Jefe").
        let body = b"what do ya want for nothing?";
        assert_eq!(
            hex(&Digest::Sha256.hmac(b"Jefe", body)),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(hex(&Digest::Sha1.hmac(b"Jefe", body)), "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79");
        assert!(hex(&Digest::Sha512.hmac(b"Jefe", body)).starts_with("164b7a7bfcf819e2e395fbe73b56e0a387bd6422"));
    }

    #[test]
    fn signatures_in_every_spelling() {
        let mac = Digest::Sha512.hmac(b"key", b"GET\n1\n/v1/a/c/o");
        use base64::Engine as _;
        let std = base64::engine::general_purpose::STANDARD.encode(&mac);
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&mac);
        assert_eq!(parse(&format!("sha512:{std}"), false), Some((Digest::Sha512, mac.clone())));
        assert_eq!(parse(&format!("sha512:{url}"), false), Some((Digest::Sha512, mac.clone())));
        assert_eq!(parse(&hex(&mac), false), None, "SHA-512 in hex only for forms");
        assert_eq!(parse(&hex(&mac), true), Some((Digest::Sha512, mac.clone())));
        let sha1 = Digest::Sha1.hmac(b"key", b"x");
        assert_eq!(parse(&hex(&sha1), false), Some((Digest::Sha1, sha1.clone())));
        assert_eq!(parse("md5:AAAA", false), None);
        assert_eq!(parse(&"z".repeat(40), false), None);
        assert_eq!(parse("abc", false), None);

        let keys = vec!["other".to_string(), "key".to_string()];
        assert!(verify(Digest::Sha1, &sha1, &keys, &["y".into(), "x".into()]));
        assert!(!verify(Digest::Sha1, &sha1, &keys[..1], &["x".into()]));
    }

    #[test]
    fn expiries() {
        assert_eq!(parse_expires("1323479485"), Some(1323479485));
        assert_eq!(parse_expires("2011-12-10T01:11:25Z"), Some(1323479485));
        assert_eq!(parse_expires("2011-12-10 01:11:25"), None);
        assert_eq!(parse_expires("soon"), None);
    }
}
