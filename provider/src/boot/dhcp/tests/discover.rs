//! DISCOVER → OFFER: the reservation and the boot file by client (BIOS, UEFI, UEFI HTTP, iPXE, an OS), and
//! silence for unknown MACs.

use super::*;

#[test]
fn bios_pxe_discover_gets_the_reservation_and_undionly() {
    let d = TestDirectory::one_host();
    let r = reply_of(answer(
        &responder(DhcpMode::Authoritative),
        &d,
        &pxe(request(MAC, MessageType::Discover), 0),
        Port::Dhcp,
    ));
    let m = &r.message;
    assert_eq!(m.opts().msg_type(), Some(MessageType::Offer));
    assert_eq!(m.xid(), 0xdead_beef);
    assert_eq!(m.chaddr(), &MAC.0);
    assert_eq!(m.yiaddr(), HOST_IP);
    assert_eq!(m.siaddr(), SERVER);
    assert_eq!(fname(m), "undionly.kpxe");
    assert_eq!(sname(m), "10.99.0.1");
    assert_eq!(
        opt(m, OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(SERVER))
    );
    assert_eq!(
        opt(m, OptionCode::SubnetMask),
        Some(&DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)))
    );
    assert_eq!(
        opt(m, OptionCode::Router),
        Some(&DhcpOption::Router(vec![Ipv4Addr::new(10, 99, 0, 254)]))
    );
    assert_eq!(
        opt(m, OptionCode::DomainNameServer),
        Some(&DhcpOption::DomainNameServer(vec![
            Ipv4Addr::new(10, 99, 0, 53),
            Ipv4Addr::new(10, 99, 0, 54)
        ]))
    );
    assert_eq!(
        opt(m, OptionCode::DomainName),
        Some(&DhcpOption::DomainName("cluster.test".into()))
    );
    assert_eq!(
        opt(m, OptionCode::Hostname),
        Some(&DhcpOption::Hostname("node1".into()))
    );
    assert_eq!(
        opt(m, OptionCode::InterfaceMtu),
        Some(&DhcpOption::InterfaceMtu(9000))
    );
    assert_eq!(
        opt(m, OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(3600))
    );
    assert_eq!(
        opt(m, OptionCode::Renewal),
        Some(&DhcpOption::Renewal(1800))
    );
    assert_eq!(
        bytes_opt(m, OptionCode::TFTPServerName).unwrap(),
        "10.99.0.1"
    );
    assert_eq!(
        bytes_opt(m, OptionCode::BootfileName).unwrap(),
        "undionly.kpxe"
    );
    // No PXEClient in an address-carrying offer: EDK2 would take it for a BINL offer (see reply.rs).
    assert!(opt(m, OptionCode::ClassIdentifier).is_none());
    assert_eq!(r.destination, Destination::Broadcast);
    assert_eq!(r.phase, Some(Phase::DhcpOffer));
}

#[test]
fn uefi_architectures_get_the_uefi_binary() {
    let d = TestDirectory::one_host();
    for arch in [6, 7, 9] {
        let r = reply_of(answer(
            &responder(DhcpMode::Authoritative),
            &d,
            &pxe(request(MAC, MessageType::Discover), arch),
            Port::Dhcp,
        ));
        assert_eq!(
            bytes_opt(&r.message, OptionCode::BootfileName).unwrap(),
            "snponly.efi",
            "arch {arch}"
        );
    }
    let mut resp = responder(DhcpMode::Authoritative);
    resp.boot.uefi = "ipxe.efi".into();
    let r = reply_of(answer(
        &resp,
        &d,
        &pxe(request(MAC, MessageType::Discover), 7),
        Port::Dhcp,
    ));
    assert_eq!(fname(&r.message), "ipxe.efi");
    // An architecture we have no binary for gets an address but no boot file.
    let r = reply_of(answer(
        &resp,
        &d,
        &pxe(request(MAC, MessageType::Discover), 11),
        Port::Dhcp,
    ));
    assert_eq!(r.message.yiaddr(), HOST_IP);
    assert!(opt(&r.message, OptionCode::BootfileName).is_none());
}

#[test]
fn uefi_http_boot_gets_a_url_and_httpclient() {
    let d = TestDirectory::one_host();
    let mut m = request(MAC, MessageType::Discover);
    m.opts_mut()
        .insert(DhcpOption::ClientSystemArchitecture(Architecture(16)));
    m.opts_mut().insert(DhcpOption::ClassIdentifier(
        b"HTTPClient:Arch:00016:UNDI:003001".to_vec(),
    ));
    let r = reply_of(answer(
        &responder(DhcpMode::Authoritative),
        &d,
        &m,
        Port::Dhcp,
    ));
    assert_eq!(
        bytes_opt(&r.message, OptionCode::BootfileName).unwrap(),
        "http://10.99.0.1:8080/ipxe/ipxe.efi"
    );
    assert_eq!(
        bytes_opt(&r.message, OptionCode::ClassIdentifier).unwrap(),
        "HTTPClient"
    );
}

#[test]
fn ipxe_user_class_gets_the_per_host_script_url() {
    let mut d = TestDirectory::one_host();
    let long = format!("http://10.99.0.1:8080/boot/{}/script.ipxe", "t".repeat(120));
    d.scripts.insert(MAC, long.clone());
    for class in [b"iPXE".to_vec(), b"\x04iPXE".to_vec()] {
        let mut m = pxe(request(MAC, MessageType::Discover), 7);
        m.opts_mut().insert(DhcpOption::UserClass(class));
        let r = reply_of(answer(
            &responder(DhcpMode::Authoritative),
            &d,
            &m,
            Port::Dhcp,
        ));
        assert_eq!(
            bytes_opt(&r.message, OptionCode::BootfileName).unwrap(),
            long
        );
        // Too long for the 128-byte file field: option 67 only.
        assert!(r.message.fname().is_none_or(|f| f.iter().all(|&b| b == 0)));
    }
}

#[test]
fn os_dhcp_clients_get_an_address_without_boot_options() {
    let d = TestDirectory::one_host();
    let r = reply_of(answer(
        &responder(DhcpMode::Authoritative),
        &d,
        &request(MAC, MessageType::Discover),
        Port::Dhcp,
    ));
    assert_eq!(r.message.yiaddr(), HOST_IP);
    assert_eq!(r.message.siaddr(), Ipv4Addr::UNSPECIFIED);
    assert!(opt(&r.message, OptionCode::BootfileName).is_none());
    assert!(opt(&r.message, OptionCode::ClassIdentifier).is_none());
}

#[test]
fn unknown_macs_get_nothing() {
    let d = TestDirectory::one_host();
    let other = MacAddr([2, 0, 0, 0, 0, 1]);
    for t in [
        MessageType::Discover,
        MessageType::Request,
        MessageType::Inform,
    ] {
        match answer(
            &responder(DhcpMode::Authoritative),
            &d,
            &pxe(request(other, t), 0),
            Port::Dhcp,
        ) {
            Outcome::Silent(Silence::UnknownMac(m)) => assert_eq!(m, other),
            o => panic!("{t:?}: expected UnknownMac, got {o:?}"),
        }
    }
}
