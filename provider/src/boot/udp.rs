//! UDP socket settings the boot plane's servers share.

use socket2::Socket;
use tracing::info;

/// Receive buffer of a server socket that a whole rack talks to at once. A rack powering on sends its
/// requests within milliseconds; the kernel's default (~200 KiB, about 150 datagrams) drops the rest of the
/// burst, and each dropped client waits for its retransmission (4 s and more for a PXE ROM's DISCOVER).
/// 4 MiB queues a few thousand.
pub const RECV_BUFFER: usize = 4 << 20;

/// Sets the receive buffer to [`RECV_BUFFER`]: beyond `net.core.rmem_max` when we may (`SO_RCVBUFFORCE`,
/// CAP_NET_ADMIN, which the usual root deployment has), else as far as `rmem_max` allows. Best effort: a
/// smaller buffer only makes bursts slower, so it is logged (naming `server`), not fatal.
pub fn grow_recv_buffer(sock: &Socket, server: &str) {
    use nix::sys::socket::{setsockopt, sockopt::RcvBufForce};
    if setsockopt(sock, RcvBufForce, &RECV_BUFFER).is_err() {
        let _ = sock.set_recv_buffer_size(RECV_BUFFER);
    }
    // The kernel reports twice the size it was given (it counts its own overhead).
    if let Ok(got) = sock.recv_buffer_size()
        && got < RECV_BUFFER
    {
        info!(
            server,
            bytes = got,
            "receive buffer capped by net.core.rmem_max; raise it (sysctl) for large racks"
        );
    }
}
