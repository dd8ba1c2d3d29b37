//! Cipher-suite negotiation (IPMI v2.0 §13.17–13.20, §22.15), as pure functions the session drives:
//! what a BMC lists in Get Channel Cipher Suites, which suites to propose and in what order, and how an
//! Open Session answer is judged. BMCs read the specification differently: some refuse a suite they lack
//! with a status code, some answer successfully with the algorithms they prefer (a counter-offer; pyghmi's
//! BMC, and so virtualbmc, always answers with suite 3), some list their suites and some ignore the command.
//! Whatever they do, a session is never weakened: a suite without integrity or confidentiality is refused.
//!
//! With [`super::CipherChoice::Auto`] the suite that worked is remembered per BMC address for the life of
//! the process, so later sessions propose it straight away.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{LazyLock, Mutex};

use super::crypto::Suite;

/// Get Channel Cipher Suites (App, 0x54) request for list index `index` of the current channel's IPMI
/// payload, listed by cipher suite (bit 7).
pub fn listing_request(index: u8) -> [u8; 3] {
    [0x0e, 0x00, 0x80 | (index & 0x3f)]
}

/// Each Get Channel Cipher Suites response carries at most this many record bytes; fewer ends the list.
pub const LISTING_CHUNK: usize = 16;

/// One cipher suite as a BMC lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub id: u8,
    pub auth: u8,
    pub integrity: Vec<u8>,
    pub confidentiality: Vec<u8>,
}

impl Listed {
    /// Whether this listed suite has exactly `s`'s algorithms among its own.
    fn offers(&self, s: Suite) -> bool {
        self.auth == s.auth_alg()
            && self.integrity.contains(&s.integrity_alg())
            && self.confidentiality.contains(&s.confidentiality_alg())
    }

    /// Without packet integrity or without encryption (algorithm 0 is "none").
    fn weak(&self) -> bool {
        self.integrity.iter().all(|&a| a == 0) || self.confidentiality.iter().all(|&a| a == 0)
    }
}

/// Parses the concatenated record data of all Get Channel Cipher Suites responses (channel byte removed):
/// `C0h id auth integ… conf…` per standard suite, `C1h id IANA(3) auth integ… conf…` per OEM suite.
/// Algorithm bytes carry their class in bits 7:6 (00 authentication, 01 integrity, 10 confidentiality).
pub fn parse_listing(records: &[u8]) -> Result<Vec<Listed>, String> {
    let mut out: Vec<Listed> = Vec::new();
    let mut i = 0;
    while i < records.len() {
        let start = records[i];
        let skip = match start {
            0xc0 => 2,
            0xc1 => 5,
            b => {
                return Err(format!(
                    "expected a record start (C0h/C1h) at byte {i}, found {b:#04x}"
                ));
            }
        };
        let id = *records
            .get(i + 1)
            .ok_or_else(|| format!("record at byte {i} ends before its suite id"))?;
        if i + skip > records.len() {
            return Err(format!(
                "OEM record at byte {i} ends inside its IANA number"
            ));
        }
        i += skip;
        let mut suite = Listed {
            id,
            auth: 0xff,
            integrity: Vec::new(),
            confidentiality: Vec::new(),
        };
        let mut auth = None;
        while i < records.len() && records[i] & 0xc0 != 0xc0 {
            let alg = records[i] & 0x3f;
            match records[i] >> 6 {
                0 if auth.is_none() => auth = Some(alg),
                0 => return Err(format!("suite {id} lists two authentication algorithms")),
                1 => suite.integrity.push(alg),
                _ => suite.confidentiality.push(alg),
            }
            i += 1;
        }
        suite.auth = auth.ok_or_else(|| format!("suite {id} has no authentication algorithm"))?;
        // OEM suites are listed for completeness; only standard ones can match ours.
        if start == 0xc0 {
            out.push(suite);
        }
    }
    Ok(out)
}

/// Why no suite can be proposed to a BMC whose list we know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Everything it lists lacks integrity or confidentiality.
    WeakOnly { listed: Vec<u8> },
    /// It lists secure suites, none of them ours.
    NoCommon { listed: Vec<u8> },
}

impl Refusal {
    /// For [`super::super::BmcError::Unsupported`]: "BMC X does not support …".
    pub fn what(&self, ours: &[Suite]) -> String {
        let ours = ids(ours);
        match self {
            Refusal::WeakOnly { listed } => format!(
                "a session with integrity and encryption: it lists only cipher suites {} (without one or \
                 the other), and Beowulf never weakens a session; enable cipher suite {ours} in the BMC's \
                 LAN settings",
                join(listed)
            ),
            Refusal::NoCommon { listed } => format!(
                "cipher suite {ours}: it lists cipher suites {}; enable one of {ours} in the BMC's LAN settings",
                join(listed)
            ),
        }
    }
}

/// The suites to propose, strongest first: `allowed` (already strongest first) narrowed to those the BMC
/// lists, when it lists any. An unknown or empty list leaves `allowed` as it is (propose and see).
pub fn plan(allowed: &[Suite], listed: Option<&[Listed]>) -> Result<Vec<Suite>, Refusal> {
    let Some(listed) = listed.filter(|l| !l.is_empty()) else {
        return Ok(allowed.to_vec());
    };
    let common: Vec<Suite> = allowed
        .iter()
        .copied()
        .filter(|&s| listed.iter().any(|l| l.offers(s)))
        .collect();
    if !common.is_empty() {
        return Ok(common);
    }
    let listed_ids = listed.iter().map(|l| l.id).collect();
    Err(if listed.iter().all(Listed::weak) {
        Refusal::WeakOnly { listed: listed_ids }
    } else {
        Refusal::NoCommon { listed: listed_ids }
    })
}

/// What a successful Open Session answer (status 0) means for a proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The algorithms of an allowed suite: the proposal itself, or a counter-offer we take.
    Accept(Suite),
    /// A counter-offer of secure algorithms we do not allow here: as good as a refusal of the proposal.
    Other(String),
    /// A counter-offer without integrity or confidentiality: never accepted.
    Weak(String),
}

/// Judges the authentication, integrity and confidentiality algorithms a BMC answered Open Session with.
pub fn judge(algs: [u8; 3], allowed: &[Suite]) -> Answer {
    let named = Suite::ALL.into_iter().find(|s| s.algorithms() == algs);
    match named {
        Some(s) if allowed.contains(&s) => Answer::Accept(s),
        Some(s) => Answer::Other(format!("cipher suite {}", s.id())),
        None => {
            let text = format!(
                "authentication algorithm {}, integrity {}, confidentiality {}",
                algs[0], algs[1], algs[2]
            );
            if algs[1] == 0 || algs[2] == 0 {
                Answer::Weak(text)
            } else {
                Answer::Other(text)
            }
        }
    }
}

/// Suites that worked with `auto`, per BMC address.
static LEARNED: LazyLock<Mutex<HashMap<SocketAddr, Suite>>> = LazyLock::new(Default::default);

/// The suite `auto` last opened a session with at this address.
pub fn learned(addr: SocketAddr) -> Option<Suite> {
    LEARNED.lock().ok()?.get(&addr).copied()
}

pub fn learn(addr: SocketAddr, suite: Suite) {
    if let Ok(mut m) = LEARNED.lock() {
        m.insert(addr, suite);
    }
}

/// The learned suite first, then the rest of `allowed` in its order.
pub fn learned_first(learned: Suite, allowed: &[Suite]) -> Vec<Suite> {
    std::iter::once(learned)
        .chain(allowed.iter().copied().filter(|&s| s != learned))
        .collect()
}

fn ids(suites: &[Suite]) -> String {
    let v: Vec<u8> = suites.iter().map(|s| s.id()).collect();
    v.iter().map(u8::to_string).collect::<Vec<_>>().join(" or ")
}

fn join(ids: &[u8]) -> String {
    ids.iter().map(u8::to_string).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// OpenIPMI ipmi_sim 2.0.33's whole list (five responses, records concatenated): suites 0–14, no 17.
    const IPMI_SIM: &str = "c000004080c001014080c002014180c003014181c004014182c005014183c006024080c007024280\
                            c008024281c009024282c00a024283c00b024380c00c024381c00d024382c00e024383";
    /// pyghmi 1.6.19's BMC (virtualbmc's engine): one record, suite 3, whatever the index.
    const PYGHMI: &str = "c003014181";

    #[test]
    fn ipmi_sims_list_parses_and_narrows_auto_to_suite_3() {
        let l = parse_listing(&hex(IPMI_SIM)).unwrap();
        assert_eq!(l.len(), 15);
        assert_eq!(
            l[3],
            Listed {
                id: 3,
                auth: 1,
                integrity: vec![1],
                confidentiality: vec![1]
            }
        );
        assert_eq!(
            plan(&[Suite::S17, Suite::S3], Some(&l)),
            Ok(vec![Suite::S3])
        );
    }

    #[test]
    fn pyghmis_list_parses_and_a_pinned_17_finds_nothing_in_common() {
        let l = parse_listing(&hex(PYGHMI)).unwrap();
        assert_eq!(
            plan(&[Suite::S17, Suite::S3], Some(&l)),
            Ok(vec![Suite::S3])
        );
        let r = plan(&[Suite::S17], Some(&l)).unwrap_err();
        assert_eq!(r, Refusal::NoCommon { listed: vec![3] });
        assert_eq!(
            r.what(&[Suite::S17]),
            "cipher suite 17: it lists cipher suites 3; enable one of 17 in the BMC's LAN settings"
        );
    }

    #[test]
    fn both_suites_listed_propose_the_strongest_first() {
        let l = parse_listing(&hex("c003014181c011034481")).unwrap();
        assert_eq!(
            plan(&[Suite::S17, Suite::S3], Some(&l)),
            Ok(vec![Suite::S17, Suite::S3])
        );
    }

    #[test]
    fn a_bmc_listing_only_suites_without_integrity_or_encryption_is_refused_never_weakened() {
        // Suites 0 (none/none/none), 1 (SHA1/none/none) and 2 (SHA1/HMAC-SHA1-96/none), as ipmi_sim lists them.
        let l = parse_listing(&hex("c000004080c001014080c002014180")).unwrap();
        let r = plan(&[Suite::S17, Suite::S3], Some(&l)).unwrap_err();
        assert_eq!(
            r,
            Refusal::WeakOnly {
                listed: vec![0, 1, 2]
            }
        );
        let msg = r.what(&[Suite::S17, Suite::S3]);
        assert!(
            msg.contains("never weakens") && msg.contains("17 or 3"),
            "{msg}"
        );
    }

    #[test]
    fn an_unknown_or_empty_list_proposes_everything_allowed() {
        assert_eq!(
            plan(&[Suite::S17, Suite::S3], None),
            Ok(vec![Suite::S17, Suite::S3])
        );
        assert_eq!(plan(&[Suite::S3], Some(&[])), Ok(vec![Suite::S3]));
    }

    #[test]
    fn oem_records_are_skipped_and_several_algorithms_per_suite_parse() {
        // An OEM suite 0x80 (IANA 0x001234), then suite 17 listing two integrity algorithms.
        let l = parse_listing(&hex("c180341200014181c01103444181")).unwrap();
        assert_eq!(
            l,
            vec![Listed {
                id: 17,
                auth: 3,
                integrity: vec![4, 1],
                confidentiality: vec![1]
            }]
        );
        assert_eq!(
            plan(&[Suite::S17, Suite::S3], Some(&l)),
            Ok(vec![Suite::S17])
        );
    }

    #[test]
    fn malformed_lists_are_errors_not_panics() {
        for bad in ["", "c0", "41", "c011", "c1011234", "c011034181c0"] {
            let r = parse_listing(&hex(bad));
            if bad.is_empty() {
                assert_eq!(r, Ok(vec![]));
            } else {
                assert!(r.is_err(), "{bad}: {r:?}");
            }
        }
    }

    #[test]
    fn open_session_answers_are_judged_by_their_algorithms() {
        let auto = [Suite::S17, Suite::S3];
        // pyghmi answers every proposal with suite 3's algorithms: a counter-offer auto takes.
        assert_eq!(judge([1, 1, 1], &auto), Answer::Accept(Suite::S3));
        assert_eq!(judge([3, 4, 1], &auto), Answer::Accept(Suite::S17));
        assert_eq!(
            judge([1, 1, 1], &[Suite::S17]),
            Answer::Other("cipher suite 3".into())
        );
        assert!(matches!(judge([1, 1, 0], &auto), Answer::Weak(_)));
        assert!(matches!(judge([1, 0, 1], &auto), Answer::Weak(_)));
        assert!(matches!(judge([2, 2, 1], &auto), Answer::Other(_)));
    }

    #[test]
    fn learned_suites_go_first() {
        assert_eq!(
            learned_first(Suite::S3, &[Suite::S17, Suite::S3]),
            vec![Suite::S3, Suite::S17]
        );
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(learned(a), None);
        learn(a, Suite::S3);
        assert_eq!(learned(a), Some(Suite::S3));
    }
}
