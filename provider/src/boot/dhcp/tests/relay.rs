//! Relayed requests: the lease on the relay's network, the answer to the relay.

use super::*;

#[test]
fn relayed_requests_look_up_by_relay_and_answer_the_relay() {
    let d = TestDirectory::one_host();
    let relay = Ipv4Addr::new(10, 99, 0, 254);
    let mut m = pxe(request(MAC, MessageType::Discover), 0);
    m.set_giaddr(relay);
    m.set_hops(1);
    let mut info = dhcproto::v4::relay::RelayAgentInformation::default();
    info.insert(dhcproto::v4::relay::RelayInfo::AgentCircuitId(
        b"rack7-port3".to_vec(),
    ));
    m.opts_mut()
        .insert(DhcpOption::RelayAgentInformation(info.clone()));
    let r = reply_of(answer(
        &responder(DhcpMode::Authoritative),
        &d,
        &m,
        Port::Dhcp,
    ));
    assert_eq!(r.destination, Destination::Relay(relay));
    assert_eq!(r.message.giaddr(), relay);
    assert_eq!(r.message.yiaddr(), HOST_IP);
    assert_eq!(
        opt(&r.message, OptionCode::RelayAgentInformation),
        Some(&DhcpOption::RelayAgentInformation(info))
    );
    assert_eq!(d.lookups.lock().unwrap().last(), Some(&(MAC, Some(relay))));

    // A relay on another subnet: the host has no reservation there.
    m.set_giaddr(Ipv4Addr::new(10, 50, 0, 1));
    assert!(matches!(
        answer(&responder(DhcpMode::Authoritative), &d, &m, Port::Dhcp),
        Outcome::Silent(Silence::UnknownMac(_))
    ));
}
