//! Listening sockets passed by a service manager (systemd socket activation, `sd_listen_fds(3)`): with a
//! `beowulf-standalone.socket` unit holding the HTTP port, a restart leaves no moment in which a host's request
//! is refused. Connections that arrive while no server runs wait in the socket's backlog for the next one.
//! Without this an iPXE that asks for its script during a restart gets a reset and ends its boot (iPXE does
//! not retry the script it was given by DHCP). DHCP and TFTP are not taken this way: their clients
//! retransmit.

use std::net::SocketAddr;
use std::os::fd::{FromRawFd as _, OwnedFd, RawFd};

use nix::sys::socket::{SockType, SockaddrStorage, getsockname, getsockopt, sockopt};

/// The first descriptor of the protocol (`SD_LISTEN_FDS_START`).
const FIRST_FD: RawFd = 3;

/// Sockets handed to this process, not yet taken.
#[derive(Debug, Default)]
pub struct Inherited {
    tcp: Vec<std::net::TcpListener>,
    /// How many descriptors the service manager passed, for error messages.
    passed: usize,
}

/// Why the passed sockets cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error("LISTEN_FDS={0:?} is not a number of sockets: fix the service manager's environment")]
    BadCount(String),
    #[error(
        "the service manager passed {passed} socket(s) but none is a TCP socket listening on port {port}: \
         make the .socket unit's ListenStream= match --http-port (or remove the unit)"
    )]
    NoMatch { passed: usize, port: u16 },
}

impl Inherited {
    /// Takes the sockets the service manager passed, if the environment says they are for this process
    /// (`LISTEN_PID` is ours). Call once, at startup, before anything opens files.
    pub fn from_env() -> Result<Inherited, ActivationError> {
        let for_us = std::env::var("LISTEN_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            == Some(std::process::id());
        let count = match std::env::var("LISTEN_FDS") {
            Ok(n) if for_us => n
                .parse::<RawFd>()
                .ok()
                .filter(|n| (0..=1024).contains(n))
                .ok_or(ActivationError::BadCount(n))?,
            _ => return Ok(Inherited::default()),
        };
        static TAKEN: std::sync::Once = std::sync::Once::new();
        let mut first = false;
        TAKEN.call_once(|| first = true);
        if !first {
            // The descriptors have owners already.
            return Ok(Inherited::default());
        }
        let mut tcp = Vec::new();
        for raw in FIRST_FD..FIRST_FD + count {
            #[allow(unsafe_code)]
            // SAFETY: by the protocol these descriptors were opened for this process (LISTEN_PID) and nothing
            // else owns them; `TAKEN` makes sure they are wrapped once. FD_CLOEXEC (which the protocol leaves
            // clear) keeps them out of any child.
            let fd = unsafe {
                libc::fcntl(raw, libc::F_SETFD, libc::FD_CLOEXEC);
                OwnedFd::from_raw_fd(raw)
            };
            let listening = getsockopt(&fd, sockopt::SockType) == Ok(SockType::Stream)
                && getsockopt(&fd, sockopt::AcceptConn) == Ok(true);
            if listening {
                tcp.push(std::net::TcpListener::from(fd));
            } else {
                tracing::warn!(
                    fd = raw,
                    "ignoring a passed descriptor that is not a listening TCP socket"
                );
            }
        }
        Ok(Inherited {
            tcp,
            passed: count as usize,
        })
    }

    /// Whether the service manager passed any socket.
    pub fn is_empty(&self) -> bool {
        self.passed == 0
    }

    /// The passed listener for the HTTP server at `want`: one listening on the same port, at the same address
    /// or with a wildcard on either side (systemd's `ListenStream=8080` is `[::]:8080`, which takes IPv4 too). `Ok(None)` when
    /// nothing was passed; an error when sockets were passed but none fits, rather than binding a second one
    /// beside the unit's.
    pub fn take_http(
        &mut self,
        want: SocketAddr,
    ) -> Result<Option<std::net::TcpListener>, ActivationError> {
        if self.is_empty() {
            return Ok(None);
        }
        let fits = |l: &std::net::TcpListener| {
            let Ok(Some(have)) = getsockname::<SockaddrStorage>(std::os::fd::AsRawFd::as_raw_fd(l))
                .map(|a| {
                    a.as_sockaddr_in()
                        .map(|a| SocketAddr::from((a.ip(), a.port())))
                        .or_else(|| {
                            a.as_sockaddr_in6()
                                .map(|a| SocketAddr::from((a.ip(), a.port())))
                        })
                })
            else {
                return false;
            };
            have.port() == want.port()
                && (have.ip() == want.ip()
                    || have.ip().is_unspecified()
                    || want.ip().is_unspecified())
        };
        match self.tcp.iter().position(fits) {
            Some(i) => Ok(Some(self.tcp.swap_remove(i))),
            None => Err(ActivationError::NoMatch {
                passed: self.passed,
                port: want.port(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inherited(listeners: Vec<std::net::TcpListener>) -> Inherited {
        Inherited {
            passed: listeners.len(),
            tcp: listeners,
        }
    }

    #[test]
    fn the_listener_on_the_http_port_is_taken_and_others_are_left() {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let want = b.local_addr().unwrap();
        let mut got = inherited(vec![a, b]);
        let taken = got.take_http(want).unwrap().unwrap();
        assert_eq!(taken.local_addr().unwrap(), want);
        assert_eq!(got.tcp.len(), 1);
    }

    #[test]
    fn a_wildcard_listener_serves_a_specific_address() {
        let any = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let port = any.local_addr().unwrap().port();
        let mut got = inherited(vec![any]);
        let want = SocketAddr::from(([10, 0, 0, 1], port));
        assert!(got.take_http(want).unwrap().is_some());
    }

    #[test]
    fn passed_sockets_on_another_port_are_an_error_that_names_the_flag() {
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = other.local_addr().unwrap().port().wrapping_add(1);
        let mut got = inherited(vec![other]);
        let err = got
            .take_http(SocketAddr::from(([127, 0, 0, 1], port)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--http-port"), "{err}");
        assert!(err.contains(&port.to_string()), "{err}");
    }

    #[test]
    fn nothing_passed_means_bind_as_usual() {
        let mut got = Inherited::default();
        assert!(
            got.take_http(SocketAddr::from(([127, 0, 0, 1], 8080)))
                .unwrap()
                .is_none()
        );
    }
}
