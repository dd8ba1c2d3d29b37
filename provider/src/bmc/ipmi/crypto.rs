//! RMCP+ cryptography (IPMI v2.0 §13.28–13.31): RAKP key-exchange codes, session keys, packet integrity
//! and AES-CBC-128 confidentiality, for cipher suites 3 (SHA-1) and 17 (SHA-256).

use aes::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use hmac::{KeyInit, Mac};
use subtle::ConstantTimeEq;

/// The hash behind the RAKP authentication and the integrity algorithm of a suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha1,
    Sha256,
}

/// A cipher suite this client speaks. Both use AES-CBC-128 for confidentiality.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    /// Suite 3: RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128.
    S3,
    /// Suite 17: RAKP-HMAC-SHA256, HMAC-SHA256-128, AES-CBC-128.
    S17,
}

impl Suite {
    /// Every suite this client speaks, strongest first.
    pub const ALL: [Suite; 2] = [Suite::S17, Suite::S3];

    pub fn id(self) -> u8 {
        match self {
            Suite::S3 => 3,
            Suite::S17 => 17,
        }
    }
    pub fn hash(self) -> Hash {
        match self {
            Suite::S3 => Hash::Sha1,
            Suite::S17 => Hash::Sha256,
        }
    }
    /// Authentication algorithm number in the Open Session request.
    pub fn auth_alg(self) -> u8 {
        match self {
            Suite::S3 => 0x01,  // RAKP-HMAC-SHA1
            Suite::S17 => 0x03, // RAKP-HMAC-SHA256
        }
    }
    /// Integrity algorithm number.
    pub fn integrity_alg(self) -> u8 {
        match self {
            Suite::S3 => 0x01,  // HMAC-SHA1-96
            Suite::S17 => 0x04, // HMAC-SHA256-128
        }
    }
    /// Confidentiality algorithm number (AES-CBC-128 for both).
    pub fn confidentiality_alg(self) -> u8 {
        0x01
    }
    /// Authentication, integrity and confidentiality algorithm numbers, as Open Session carries them.
    pub fn algorithms(self) -> [u8; 3] {
        [
            self.auth_alg(),
            self.integrity_alg(),
            self.confidentiality_alg(),
        ]
    }
    /// Length of the RAKP 2/3 key exchange authentication code (full HMAC).
    pub fn rakp_len(self) -> usize {
        match self.hash() {
            Hash::Sha1 => 20,
            Hash::Sha256 => 32,
        }
    }
    /// Length of the RAKP 4 integrity check value and of each packet's AuthCode (truncated HMAC).
    pub fn icv_len(self) -> usize {
        match self.hash() {
            Hash::Sha1 => 12,
            Hash::Sha256 => 16,
        }
    }
}

pub fn hmac(hash: Hash, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    fn run<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        // HMAC accepts keys of any length; the error branch cannot happen.
        let Ok(mut m) = <M as KeyInit>::new_from_slice(key) else {
            return Vec::new();
        };
        for p in parts {
            m.update(p);
        }
        m.finalize().into_bytes().to_vec()
    }
    match hash {
        Hash::Sha1 => run::<hmac::Hmac<sha1::Sha1>>(key, parts),
        Hash::Sha256 => run::<hmac::Hmac<sha2::Sha256>>(key, parts),
    }
}

/// Constant-time comparison of a received code with the expected one.
pub fn codes_match(expected: &[u8], received: &[u8]) -> bool {
    expected.len() == received.len() && bool::from(expected.ct_eq(received))
}

/// What both sides know after RAKP 1 and 2; the input of every RAKP code and of the session key.
#[derive(Debug, Clone)]
pub struct Exchange<'a> {
    pub suite: Suite,
    /// Remote console (our) session id.
    pub sid_m: u32,
    /// Managed system (BMC) session id.
    pub sid_c: u32,
    /// Our random number (RAKP 1).
    pub rand_m: [u8; 16],
    /// The BMC's random number (RAKP 2).
    pub rand_c: [u8; 16],
    /// The BMC's GUID (RAKP 2).
    pub guid_c: [u8; 16],
    /// Requested maximum privilege byte as sent in RAKP 1 (including the name-only lookup bit).
    pub role: u8,
    pub username: &'a [u8],
}

impl Exchange<'_> {
    /// The code the BMC must send in RAKP 2, keyed with the user's password (Kuid).
    pub fn rakp2_code(&self, kuid: &[u8]) -> Vec<u8> {
        hmac(
            self.suite.hash(),
            kuid,
            &[
                &self.sid_m.to_le_bytes(),
                &self.sid_c.to_le_bytes(),
                &self.rand_m,
                &self.rand_c,
                &self.guid_c,
                &[self.role, self.username.len() as u8],
                self.username,
            ],
        )
    }

    /// The code we send in RAKP 3.
    pub fn rakp3_code(&self, kuid: &[u8]) -> Vec<u8> {
        hmac(
            self.suite.hash(),
            kuid,
            &[
                &self.rand_c,
                &self.sid_m.to_le_bytes(),
                &[self.role, self.username.len() as u8],
                self.username,
            ],
        )
    }

    /// The session integrity key, keyed with Kg (the BMC key, or Kuid when the BMC has none: see
    /// [`sik_key`]).
    pub fn sik(&self, kg: &[u8]) -> Vec<u8> {
        hmac(
            self.suite.hash(),
            kg,
            &[
                &self.rand_m,
                &self.rand_c,
                &[self.role, self.username.len() as u8],
                self.username,
            ],
        )
    }

    /// The integrity check value the BMC must send in RAKP 4 (truncated).
    pub fn rakp4_icv(&self, sik: &[u8]) -> Vec<u8> {
        let mut v = hmac(
            self.suite.hash(),
            sik,
            &[&self.rand_m, &self.sid_c.to_le_bytes(), &self.guid_c],
        );
        v.truncate(self.suite.icv_len());
        v
    }
}

/// The key the SIK is keyed with: the BMC key (Kg) when one is set and not all zeros (IPMI v2.0 §13.31: a
/// zero Kg means "none"), otherwise the user's password (Kuid).
pub fn sik_key<'a>(kuid: &'a [u8], kg: Option<&'a [u8]>) -> &'a [u8] {
    match kg {
        Some(k) if k.iter().any(|&b| b != 0) => k,
        _ => kuid,
    }
}

/// The per-session keys derived from the SIK.
#[derive(Clone)]
pub struct SessionKeys {
    pub suite: Suite,
    /// Integrity key.
    pub k1: Vec<u8>,
    /// Confidentiality key source; AES-128 uses its first 16 bytes.
    pub k2: Vec<u8>,
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKeys")
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

impl SessionKeys {
    pub fn derive(suite: Suite, sik: &[u8]) -> SessionKeys {
        let n = suite.rakp_len();
        SessionKeys {
            suite,
            k1: hmac(suite.hash(), sik, &[&vec![0x01; n]]),
            k2: hmac(suite.hash(), sik, &[&vec![0x02; n]]),
        }
    }

    /// The AuthCode trailing an authenticated packet.
    pub fn auth_code(&self, data: &[u8]) -> Vec<u8> {
        let mut v = hmac(self.suite.hash(), &self.k1, &[data]);
        v.truncate(self.suite.icv_len());
        v
    }

    fn aes_key(&self) -> [u8; 16] {
        let mut k = [0u8; 16];
        k.copy_from_slice(&self.k2[..16]);
        k
    }

    /// Encrypts a payload: IV, then AES-CBC-128 of the data with IPMI's confidentiality trailer
    /// (pad bytes 1, 2, 3, … and the pad length) up to a multiple of 16.
    pub fn encrypt(&self, iv: [u8; 16], plain: &[u8]) -> Vec<u8> {
        let pad = (16 - (plain.len() + 1) % 16) % 16;
        let mut buf = Vec::with_capacity(16 + plain.len() + pad + 1);
        buf.extend_from_slice(&iv);
        buf.extend_from_slice(plain);
        buf.extend((1..=pad as u8).collect::<Vec<u8>>());
        buf.push(pad as u8);
        let mut enc = cbc::Encryptor::<aes::Aes128>::new(&self.aes_key().into(), &iv.into());
        for block in buf[16..].chunks_exact_mut(16) {
            if let Ok(b) = <&mut aes::Block>::try_from(block) {
                enc.encrypt_block(b);
            }
        }
        buf
    }

    /// Decrypts a payload produced by [`SessionKeys::encrypt`]; `None` when it is malformed.
    pub fn decrypt(&self, data: &[u8]) -> Option<Vec<u8>> {
        if data.len() < 32 || !data.len().is_multiple_of(16) {
            return None;
        }
        let iv: [u8; 16] = data[..16].try_into().ok()?;
        let mut buf = data[16..].to_vec();
        let mut dec = cbc::Decryptor::<aes::Aes128>::new(&self.aes_key().into(), &iv.into());
        for block in buf.chunks_exact_mut(16) {
            let b = <&mut aes::Block>::try_from(block).ok()?;
            dec.decrypt_block(b);
        }
        let pad = *buf.last()? as usize;
        if pad >= 16 || pad + 1 > buf.len() {
            return None;
        }
        let body = buf.len() - 1 - pad;
        // The pad bytes must read 1, 2, 3, …
        if buf[body..body + pad]
            .iter()
            .enumerate()
            .any(|(i, &b)| b as usize != i + 1)
        {
            return None;
        }
        buf.truncate(body);
        Some(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// Runs an independent implementation (Python's hmac/hashlib) of the same derivations.
    fn python_reference(suite: Suite, ex: &Exchange, password: &[u8], kg: &[u8]) -> Vec<String> {
        let script = r#"
import hmac, hashlib, sys
h = {'sha1': hashlib.sha1, 'sha256': hashlib.sha256}[sys.argv[1]]
sid_m, sid_c, rm, rc, guid, role, user, kuid, kg = [bytes.fromhex(a) for a in sys.argv[2:11]]
kg = kg if any(kg) else kuid
n = h().digest_size
icv = 12 if n == 20 else 16
mac = lambda k, m: hmac.new(k, m, h).digest()
ul = bytes([len(user)])
rakp2 = mac(kuid, sid_m + sid_c + rm + rc + guid + role + ul + user)
rakp3 = mac(kuid, rc + sid_m + role + ul + user)
sik = mac(kg, rm + rc + role + ul + user)
rakp4 = mac(sik, rm + sid_c + guid)[:icv]
k1 = mac(sik, b'\x01' * n)
k2 = mac(sik, b'\x02' * n)
pkt = bytes(range(40))
auth = mac(k1, pkt)[:icv]
for v in (rakp2, rakp3, sik, rakp4, k1, k2, auth):
    print(v.hex())
"#;
        let out = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(match suite.hash() {
                Hash::Sha1 => "sha1",
                Hash::Sha256 => "sha256",
            })
            .arg(hex(&ex.sid_m.to_le_bytes()))
            .arg(hex(&ex.sid_c.to_le_bytes()))
            .arg(hex(&ex.rand_m))
            .arg(hex(&ex.rand_c))
            .arg(hex(&ex.guid_c))
            .arg(hex(&[ex.role]))
            .arg(hex(ex.username))
            .arg(hex(password))
            .arg(hex(kg))
            .output()
            .expect("python3 runs (it is part of the test peers)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// `kg`: the BMC key (empty or all zeros: none, the password keys the SIK).
    fn known_answer(suite: Suite, kg: &[u8]) {
        let ex = Exchange {
            suite,
            sid_m: 0xa0a1_a2a3,
            sid_c: 0x0102_0304,
            rand_m: *b"0123456789abcdef",
            rand_c: [0x5a; 16],
            guid_c: [
                0xa1, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xa1, 0x23, 0x45, 0x67, 0x89, 0xab,
                0xcd, 0xef,
            ],
            role: 0x14,
            username: b"admin",
        };
        let password = b"password";
        let want = python_reference(suite, &ex, password, kg);
        let sik = ex.sik(sik_key(password, Some(kg)));
        let keys = SessionKeys::derive(suite, &sik);
        let pkt: Vec<u8> = (0..40).collect();
        let got = [
            ex.rakp2_code(password),
            ex.rakp3_code(password),
            sik.clone(),
            ex.rakp4_icv(&sik),
            keys.k1.clone(),
            keys.k2.clone(),
            keys.auth_code(&pkt),
        ];
        let names = ["RAKP2", "RAKP3", "SIK", "RAKP4", "K1", "K2", "AuthCode"];
        assert_eq!(want.len(), got.len());
        for ((name, w), g) in names.iter().zip(&want).zip(&got) {
            assert_eq!(&hex(g), w, "{name} for suite {}", suite.id());
        }
        assert_eq!(got[0].len(), suite.rakp_len());
        assert_eq!(got[3].len(), suite.icv_len());
        // A password padded with zeros to 20 bytes (how IPMI stores it) gives the same codes.
        let mut padded = password.to_vec();
        padded.resize(20, 0);
        assert_eq!(ex.rakp2_code(&padded), got[0]);
    }

    #[test]
    fn suite3_key_derivation_and_rakp_codes_match_python() {
        known_answer(Suite::S3, &[]);
    }

    #[test]
    fn suite17_key_derivation_and_rakp_codes_match_python() {
        known_answer(Suite::S17, &[]);
    }

    #[test]
    fn bmc_key_kg_keys_the_sik_in_both_suites_as_python_does() {
        let kg: Vec<u8> = (0x41..0x41 + 20).collect();
        known_answer(Suite::S3, &kg);
        known_answer(Suite::S17, &kg);
        // An all-zero Kg is "no Kg": the password keys the SIK.
        known_answer(Suite::S3, &[0; 20]);
        assert_eq!(sik_key(b"pw", Some(&[0; 20])), b"pw");
        assert_eq!(sik_key(b"pw", None), b"pw");
        assert_eq!(sik_key(b"pw", Some(&kg)), &kg[..]);
    }

    #[test]
    fn aes_cbc_matches_openssl_and_round_trips() {
        let keys = SessionKeys {
            suite: Suite::S3,
            k1: vec![1; 20],
            k2: (0u8..20).collect(),
        };
        let iv = [0x24u8; 16];
        let plain = b"hello IPMI confidentiality!";
        let ct = keys.encrypt(iv, plain);
        assert_eq!(ct.len() % 16, 0);
        assert_eq!(&ct[..16], &iv);
        assert_eq!(keys.decrypt(&ct).unwrap(), plain);
        // Independent check: openssl decrypts with no padding and shows IPMI's 1,2,3,… trailer.
        use std::io::Write;
        let mut child = Command::new("openssl")
            .args([
                "enc",
                "-d",
                "-aes-128-cbc",
                "-nopad",
                "-K",
                &hex(&keys.k2[..16]),
                "-iv",
                &hex(&iv),
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("openssl runs");
        child.stdin.take().unwrap().write_all(&ct[16..]).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let pad = 32 - plain.len() - 1;
        let mut want = plain.to_vec();
        want.extend(1..=pad as u8);
        want.push(pad as u8);
        assert_eq!(out.stdout, want);
        // Tampered ciphertext (wrong padding after decryption) is rejected, not panicked on.
        let mut bad = ct.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert!(keys.decrypt(&bad).is_none());
        assert!(keys.decrypt(&ct[..20]).is_none());
        assert!(keys.decrypt(&[]).is_none());
    }
}
