//! SSH public keys: validation and fingerprints as upstream computes them (MD5 of the key blob, `aa:bb:…`), and
//! generation of new key pairs (ed25519) whose private half is handed out once.

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
    fn generated_keys_parse_and_differ() {
        let a = generate("k1").unwrap();
        let b = generate("k2").unwrap();
        assert!(a.public_key.starts_with("ssh-ed25519 "));
        assert!(a.private_key.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
        assert_eq!(ssh_fingerprint(&a.public_key).unwrap(), a.fingerprint);
        assert_ne!(a.fingerprint, b.fingerprint);
    }
}
