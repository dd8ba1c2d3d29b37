//! REQUEST, INFORM, DECLINE and RELEASE: ACK/NAK by state, unicast to renewing clients, silence where
//! another server is chosen.

use super::*;

#[test]
fn request_selecting_us_is_acked_and_others_are_left_alone() {
    let d = TestDirectory::one_host();
    let resp = responder(DhcpMode::Authoritative);
    let mut m = pxe(request(MAC, MessageType::Request), 7);
    m.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER));
    m.opts_mut().insert(DhcpOption::RequestedIpAddress(HOST_IP));
    let r = reply_of(answer(&resp, &d, &m, Port::Dhcp));
    assert_eq!(r.message.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(r.message.yiaddr(), HOST_IP);
    assert_eq!(r.phase, Some(Phase::DhcpAck));
    assert_eq!(r.destination, Destination::Broadcast);
    assert_eq!(fname(&r.message), "snponly.efi");

    m.opts_mut()
        .insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 99, 0, 2)));
    assert!(matches!(
        answer(&resp, &d, &m, Port::Dhcp),
        Outcome::Silent(Silence::NotForUs(_))
    ));

    // INIT-REBOOT with an address that is not this host's reservation: NAK, broadcast.
    let mut m = request(MAC, MessageType::Request);
    m.opts_mut()
        .insert(DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 99, 0, 77)));
    let r = reply_of(answer(&resp, &d, &m, Port::Dhcp));
    assert_eq!(r.message.opts().msg_type(), Some(MessageType::Nak));
    assert_eq!(r.message.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(r.destination, Destination::Broadcast);
    assert_eq!(r.phase, None);
}

#[test]
fn renewing_clients_get_unicast_and_the_broadcast_flag_is_kept() {
    let d = TestDirectory::one_host();
    let resp = responder(DhcpMode::Authoritative);
    let mut m = request(MAC, MessageType::Request);
    m.set_ciaddr(HOST_IP);
    let r = reply_of(answer(&resp, &d, &m, Port::Dhcp));
    assert_eq!(r.message.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(r.message.ciaddr(), HOST_IP);
    assert_eq!(r.destination, Destination::Client(HOST_IP));

    let mut m = request(MAC, MessageType::Discover);
    m.set_flags(Flags::default().set_broadcast());
    let r = reply_of(answer(&resp, &d, &m, Port::Dhcp));
    assert!(r.message.flags().broadcast());
    assert_eq!(r.destination, Destination::Broadcast);
}

#[test]
fn inform_is_acked_without_an_address_or_lease_time() {
    let d = TestDirectory::one_host();
    let mut m = request(MAC, MessageType::Inform);
    m.set_ciaddr(HOST_IP);
    let r = reply_of(answer(
        &responder(DhcpMode::Authoritative),
        &d,
        &m,
        Port::Dhcp,
    ));
    assert_eq!(r.message.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(r.message.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert!(opt(&r.message, OptionCode::AddressLeaseTime).is_none());
    assert!(opt(&r.message, OptionCode::SubnetMask).is_some());
    assert_eq!(r.destination, Destination::Client(HOST_IP));
    assert_eq!(r.phase, None);
}

#[test]
fn decline_and_release_are_not_answered() {
    let d = TestDirectory::one_host();
    let mut m = request(MAC, MessageType::Decline);
    m.opts_mut().insert(DhcpOption::RequestedIpAddress(HOST_IP));
    assert_eq!(
        match answer(&responder(DhcpMode::Authoritative), &d, &m, Port::Dhcp) {
            Outcome::Silent(s) => s,
            o => panic!("{o:?}"),
        },
        Silence::Declined {
            mac: MAC,
            ip: Some(HOST_IP)
        }
    );
    assert!(matches!(
        answer(
            &responder(DhcpMode::Authoritative),
            &d,
            &request(MAC, MessageType::Release),
            Port::Dhcp
        ),
        Outcome::Silent(Silence::Released(_))
    ));
}
