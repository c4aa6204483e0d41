//! SSH public keys: validation and fingerprints as upstream computes them (MD5 of the key blob, `aa:bb:…`), and
//! generation of new key pairs (ed25519) whose private half is handed out once. X.509 key pairs (microversion
//! 2.2): a PEM certificate's fingerprint (SHA-1 of its DER, `aa:bb:…`), and generation of a self-signed
//! certificate with its PKCS#8 private key.

use base64::Engine as _;
use md5::{Digest as _, Md5};
use ssh_key::{LineEnding, PrivateKey, PublicKey, private::Ed25519Keypair};

use crate::error::Error;

/// A generated key pair in OpenSSH formats.
#[derive(Clone, Debug)]
pub struct Generated {
    pub public_key: String,
    pub private_key: String,
    pub fingerprint: String,
}

fn invalid() -> Error {
    Error::BadRequest("Keypair data is invalid: failed to generate fingerprint".into())
}

/// The MD5 fingerprint of an OpenSSH public key line (`ssh-rsa AAAA… comment`); 400 if it is not a valid key.
pub fn ssh_fingerprint(public_key: &str) -> Result<String, Error> {
    let line = public_key.trim();
    PublicKey::from_openssh(line).map_err(|_| invalid())?;
    let blob = line.split_whitespace().nth(1).ok_or_else(invalid)?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(blob).map_err(|_| invalid())?;
    Ok(md5_colons(&bytes))
}

fn md5_colons(bytes: &[u8]) -> String {
    Md5::digest(bytes).iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// A new ed25519 key pair, commented with `comment` (upstream comments with the key name).
pub fn generate(comment: &str) -> Result<Generated, Error> {
    let seed: [u8; 32] = rand::random();
    let mut private = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    private.set_comment(comment);
    let private_key = private
        .to_openssh(LineEnding::LF)
        .map_err(|e| Error::Config(format!("cannot encode a generated key: {e}")))?
        .to_string();
    let public_key = private
        .public_key()
        .to_openssh()
        .map_err(|e| Error::Config(format!("cannot encode a generated key: {e}")))?;
    let fingerprint = ssh_fingerprint(&public_key)?;
    Ok(Generated { public_key, private_key, fingerprint })
}

/// The SHA-1 fingerprint of a PEM certificate (`-----BEGIN CERTIFICATE-----`); 400 if it is not one.
pub fn x509_fingerprint(pem: &str) -> Result<String, Error> {
    let der = pem_body(pem, "CERTIFICATE").ok_or_else(invalid)?;
    // The whole of it must be one DER SEQUENCE (a certificate) holding at least a to-be-signed SEQUENCE.
    let (tag, content, rest) = der_element(&der).ok_or_else(invalid)?;
    if tag != 0x30 || !rest.is_empty() || !matches!(der_element(content), Some((0x30, _, _))) {
        return Err(invalid());
    }
    Ok(colons(&sha1::Sha1::digest(&der)))
}

fn colons(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// The bytes of the first PEM block labelled `label`.
fn pem_body(pem: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)? + begin.len();
    let stop = start + pem[start..].find(&end)?;
    let b64: String = pem[start..stop].chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

/// One DER element: its tag, its content and what follows it.
fn der_element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        (rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b)), &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

fn seq(parts: &[Vec<u8>]) -> Vec<u8> {
    der(0x30, &parts.concat())
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

/// `id-Ed25519` (1.3.101.112) as an AlgorithmIdentifier.
fn ed25519_algorithm() -> Vec<u8> {
    seq(&[der(0x06, &[0x2b, 0x65, 0x70])])
}

fn sign<K: ssh_key::SigningKey>(key: &K, message: &[u8]) -> Result<Vec<u8>, Error> {
    let sig = key.try_sign(message).map_err(|e| Error::Config(format!("cannot sign a certificate: {e}")))?;
    Ok(sig.as_bytes().to_vec())
}

/// A new self-signed X.509 certificate for `common_name` (ed25519, valid ten years) with its private key (PKCS#8
/// PEM), as upstream generates the `x509` key pairs it is asked for without a certificate.
pub fn generate_x509(common_name: &str) -> Result<Generated, Error> {
    let seed: [u8; 32] = rand::random();
    let keypair = Ed25519Keypair::from_seed(&seed);
    let name = seq(&[der(0x31, &seq(&[der(0x06, &[0x55, 0x04, 0x03]), der(0x0c, common_name.as_bytes())]))]);
    let now = chrono::Utc::now();
    let utc = |t: chrono::DateTime<chrono::Utc>| der(0x17, t.format("%y%m%d%H%M%SZ").to_string().as_bytes());
    let validity = seq(&[utc(now), utc(now + chrono::Duration::days(3650))]);
    let mut serial: [u8; 16] = rand::random();
    serial[0] &= 0x7f;
    serial[0] |= 0x01;
    let spki = seq(&[ed25519_algorithm(), der(0x03, &[&[0u8][..], keypair.public.as_ref().as_slice()].concat())]);
    let tbs = seq(&[
        der(0xa0, &der(0x02, &[2])),
        der(0x02, &serial),
        ed25519_algorithm(),
        name.clone(),
        validity,
        name,
        spki,
    ]);
    let signature = sign(&PrivateKey::from(keypair), &tbs)?;
    let cert = seq(&[tbs, ed25519_algorithm(), der(0x03, &[&[0u8][..], &signature].concat())]);
    let pkcs8 = seq(&[der(0x02, &[0]), ed25519_algorithm(), der(0x04, &der(0x04, &seed))]);
    Ok(Generated {
        fingerprint: colons(&sha1::Sha1::digest(&cert)),
        public_key: pem("CERTIFICATE", &cert),
        private_key: pem("PRIVATE KEY", &pkcs8),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Tempest's sample RSA key (tempest.api.compute.keypairs) and its fingerprint as Nova reports it.
    const RSA: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQCs\
Ne3/1ILNCqFyfYWDeTKLD6jEXC2OQHLmietMWW+/vd\
aZq7KZEwO0jhglaFjU1mpqq4Gz5RX156sCTNM9vRbw\
KAxfsdF9laBYVsex3m3Wmui3uYrKyumsoJn2g9GNnG1P\
I1mrVjZ61i0GY3khna+wzlTpCCmy5HNlrmbj3XLqBUpip\
TOXmsnr4sChzC53KCd8LXuwc1i/CZPvF+3XipvAgFSE53pCt\
LOeB1kYMOBaiUPLQTWXR3JpckqFIQwhIH0zoHlJvZE8hh90\
XcPojYN56tI0OlrGqojbediJYD0rUsJu4weZpbn8vilb3JuDY+jws\
snSA8wzBx3A/8y9Pp1B nova@ubuntu";

    #[test]
    fn md5_fingerprint_of_an_rsa_key() {
        let fp = ssh_fingerprint(RSA).unwrap();
        assert_eq!(fp.len(), 47);
        assert_eq!(fp.split(':').count(), 16);
        // Stable: the same key always gives the same fingerprint.
        assert_eq!(fp, ssh_fingerprint(&format!("  {RSA}\n")).unwrap());
    }

    /// Clients (Tempest among them) import ECDSA keys; the fingerprint is the one `ssh-keygen -l -E md5` prints.
    #[test]
    fn ecdsa_keys_import_with_ssh_keygen_fingerprint() {
        let key = "ecdsa-sha2-nistp384 AAAAE2VjZHNhLXNoYTItbmlzdHAzODQAAAAIbmlzdHAzODQAAABhBOYXUjttnioo2D/d91bRuhRT9PFLFu\
ymW4M++cFervMSl4WBtAlulPpRFElYwUwRrmYxM/CjZG58TuEJgvV7L+jeN+H+OpDH+dd8MC4YF1lxagyNZEITtc+ur88vgUf8dA== test@ec";
        assert_eq!(ssh_fingerprint(key).unwrap(), "8c:31:fe:08:23:5b:93:e1:ce:6a:15:8e:89:9e:29:c5");
    }

    #[test]
    fn garbage_is_rejected() {
        for bad in ["", "ssh-rsa", "ssh-rsa AAAA", "not a key at all", "ssh-rsa !!!! x"] {
            assert!(matches!(ssh_fingerprint(bad), Err(Error::BadRequest(_))), "{bad}");
        }
    }

    #[test]
    fn x509_certificates_are_generated_and_fingerprinted() {
        let g = generate_x509("cert").unwrap();
        assert!(g.public_key.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(g.private_key.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert_eq!(x509_fingerprint(&g.public_key).unwrap(), g.fingerprint);
        assert_eq!(g.fingerprint.split(':').count(), 20);
        // The certificate's signature over its to-be-signed part verifies with the key in the private key's PEM.
        let cert = pem_body(&g.public_key, "CERTIFICATE").unwrap();
        let (_, body, _) = der_element(&cert).unwrap();
        let (_, _, after_tbs) = der_element(body).unwrap();
        let tbs = &body[..body.len() - after_tbs.len()];
        let (_, _, after_alg) = der_element(after_tbs).unwrap();
        let (tag, bits, _) = der_element(after_alg).unwrap();
        assert_eq!((tag, bits.len(), bits[0]), (0x03, 65, 0));
        let pkcs8 = pem_body(&g.private_key, "PRIVATE KEY").unwrap();
        let seed: [u8; 32] = pkcs8[pkcs8.len() - 32..].try_into().unwrap();
        let keypair = Ed25519Keypair::from_seed(&seed);
        // Ed25519 signatures are deterministic: signing again gives the certificate's signature.
        assert_eq!(sign(&PrivateKey::from(keypair.clone()), tbs).unwrap(), bits[1..]);
        let spki_key = keypair.public.as_ref().as_slice();
        assert!(tbs.windows(32).any(|w| w == spki_key), "the certificate carries the public key");
        for bad in ["", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----", "ssh-rsa AAAA"] {
            assert!(matches!(x509_fingerprint(bad), Err(Error::BadRequest(_))), "{bad}");
        }
    }

    #[test]
    fn generated_keys_parse_and_differ() {
        let a = generate("k1").unwrap();
        let b = generate("k2").unwrap();
        assert!(a.public_key.starts_with("ssh-ed25519 "));
        assert!(a.private_key.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
        assert_eq!(ssh_fingerprint(&a.public_key).unwrap(), a.fingerprint);
        assert_ne!(a.fingerprint, b.fingerprint);
    }
}
