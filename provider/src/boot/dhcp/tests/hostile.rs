//! Hostile input: malformed datagrams are refused and counted; arbitrary bytes never panic (proptest).

use super::*;

#[test]
fn malformed_packets_are_refused() {
    let good = pxe(request(MAC, MessageType::Discover), 0)
        .to_vec()
        .unwrap();
    assert!(reply::parse(&good).is_ok());
    assert!(reply::parse(&good[..239]).is_err());
    assert!(reply::parse(&[]).is_err());
    let mut oversized = good.clone();
    oversized.resize(reply::MAX_PACKET + 1, 0);
    assert!(reply::parse(&oversized).is_err());
    let mut bad_magic = good.clone();
    bad_magic[236] = 0;
    assert!(reply::parse(&bad_magic).is_err());
    let mut long_hlen = good.clone();
    long_hlen[2] = 200; // would slice past chaddr in a trusting decoder
    assert!(reply::parse(&long_hlen).is_err());
    // BOOTP without a message type.
    let mut bootp = good[..240].to_vec();
    bootp.push(255);
    assert!(reply::parse(&bootp).is_err());
}

/// Found by the `dhcp` fuzz target: two option 94s of 3 bytes each, which the decoder concatenates (RFC 3396)
/// into one of 6 and then asserts is 3 long. The first counts; the request is still served.
#[test]
fn a_repeated_fixed_length_option_counts_once() {
    let good = pxe(request(MAC, MessageType::Discover), 0)
        .to_vec()
        .unwrap();
    let end = good.iter().rposition(|b| *b == 255).unwrap();
    let mut twice = good[..end].to_vec();
    twice.extend_from_slice(&[
        94, 3, 1, 2, 1, 94, 3, 1, 3, 0, 50, 4, 10, 99, 0, 10, 50, 4, 10, 99, 0, 11, 255,
    ]);
    let m = reply::parse(&twice).expect("served, the repeats dropped");
    assert_eq!(
        opt(&m, OptionCode::ClientNetworkInterface),
        Some(&DhcpOption::ClientNetworkInterface(1, 2, 1))
    );
    assert_eq!(
        opt(&m, OptionCode::RequestedIpAddress),
        Some(&DhcpOption::RequestedIpAddress(std::net::Ipv4Addr::new(
            10, 99, 0, 10
        )))
    );
    let d = TestDirectory::one_host();
    assert!(matches!(
        reply::respond(&responder(DhcpMode::Authoritative), &d, &m, Port::Dhcp),
        Outcome::Reply(_)
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_datagrams_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..1200), raw in any::<bool>()) {
        let d = TestDirectory::one_host();
        // Half fully random, half a valid header with random options (what reaches the option decoder).
        let bytes = if raw { tail } else {
            let mut b = request(MAC, MessageType::Discover).to_vec().unwrap()[..240].to_vec();
            b.extend_from_slice(&tail);
            b
        };
        if let Ok(m) = reply::parse(&bytes) {
            for mode in [DhcpMode::Authoritative, DhcpMode::Proxy] {
                if let Outcome::Reply(r) = reply::respond(&responder(mode), &d, &m, Port::Dhcp) {
                    reply::encode(&r.message).unwrap();
                }
            }
        }
    }

    #[test]
    fn mutated_requests_never_panic(
        cut in 0usize..400,
        flips in proptest::collection::vec((0usize..400, any::<u8>()), 0..12),
        arch in 0u16..20,
    ) {
        let d = TestDirectory::one_host();
        let mut m = pxe(request(MAC, MessageType::Request), arch);
        m.opts_mut().insert(DhcpOption::UserClass(b"iPXE".to_vec()));
        m.opts_mut().insert(DhcpOption::RequestedIpAddress(HOST_IP));
        let mut info = dhcproto::v4::relay::RelayAgentInformation::default();
        info.insert(dhcproto::v4::relay::RelayInfo::AgentCircuitId(b"c1".to_vec()));
        info.insert(dhcproto::v4::relay::RelayInfo::LinkSelection(HOST_IP));
        m.opts_mut().insert(DhcpOption::RelayAgentInformation(info));
        let mut bytes = m.to_vec().unwrap();
        for (at, v) in flips {
            if let Some(b) = bytes.get_mut(at) {
                *b = v;
            }
        }
        bytes.truncate(cut.max(200));
        if let Ok(m) = reply::parse(&bytes) {
            for mode in [DhcpMode::Authoritative, DhcpMode::Proxy] {
                for port in [Port::Dhcp, Port::ProxyBoot] {
                    if let Outcome::Reply(r) = reply::respond(&responder(mode), &d, &m, port) {
                        reply::encode(&r.message).unwrap();
                    }
                }
            }
        }
    }
}
