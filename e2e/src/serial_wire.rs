//! The cable between a machine's serial port and its BMC's UART, for SOL tests: ipmi_sim's `sol
//! "tcp:127.0.0.1:PORT"` connects to [`SerialWire::bmc_port`] (and reconnects when it restarts); each QEMU
//! run connects its serial chardev to [`SerialWire::machine_socket`], a Unix socket, which works from inside
//! the machine's network namespace. Bytes are copied both ways while both ends are there (a real UART drops
//! characters nobody reads too); what went towards the machine is kept for assertions (bytes on the wire).
//! QEMU keeps its own copy of what the machine printed (`logfile=`), so tests see both sides.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Ends {
    bmc: Option<TcpStream>,
    machine: Option<UnixStream>,
}

pub struct SerialWire {
    pub bmc_port: u16,
    socket: PathBuf,
    ends: Arc<Mutex<Ends>>,
    to_machine: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
}

impl SerialWire {
    /// Listens on 127.0.0.1 (a free port) for the BMC and on `dir/serial.sock` for the machine.
    pub fn start(dir: &Path) -> SerialWire {
        let bmc = TcpListener::bind("127.0.0.1:0").unwrap();
        let bmc_port = bmc.local_addr().unwrap().port();
        let socket = dir.join("serial.sock");
        let _ = std::fs::remove_file(&socket);
        let machine = UnixListener::bind(&socket).unwrap();
        let wire = SerialWire {
            bmc_port,
            socket,
            ends: Arc::default(),
            to_machine: Arc::default(),
            stop: Arc::default(),
        };
        // The BMC side: each connection replaces the last; what it sends goes to the machine.
        let (ends, to_machine, stop) = (
            wire.ends.clone(),
            wire.to_machine.clone(),
            wire.stop.clone(),
        );
        std::thread::spawn(move || {
            for conn in bmc.incoming() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                ends.lock().unwrap().bmc = conn.try_clone().ok();
                let (ends, to_machine) = (ends.clone(), to_machine.clone());
                std::thread::spawn(move || {
                    pump(&mut conn, |b| {
                        to_machine.lock().unwrap().extend_from_slice(b);
                        if let Some(m) = ends.lock().unwrap().machine.as_mut() {
                            let _ = m.write_all(b);
                        }
                    })
                });
            }
        });
        // The machine side: one QEMU run per connection; what it prints goes to the BMC.
        let (ends, stop) = (wire.ends.clone(), wire.stop.clone());
        std::thread::spawn(move || {
            for conn in machine.incoming() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                ends.lock().unwrap().machine = conn.try_clone().ok();
                let ends = ends.clone();
                std::thread::spawn(move || {
                    pump(&mut conn, |b| {
                        if let Some(bmc) = ends.lock().unwrap().bmc.as_mut() {
                            let _ = bmc.write_all(b);
                        }
                    })
                });
            }
        });
        wire
    }

    /// The Unix socket the machine's serial port connects to.
    pub fn machine_socket(&self) -> &Path {
        &self.socket
    }

    /// Everything the BMC sent towards the machine so far (what a console typed).
    pub fn to_machine(&self) -> Vec<u8> {
        self.to_machine.lock().unwrap().clone()
    }
}

/// Hands what `from` sends to `to`, until it closes.
fn pump(from: &mut impl Read, mut to: impl FnMut(&[u8])) {
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = from.read(&mut buf) {
        to(&buf[..n]);
    }
}

impl Drop for SerialWire {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake both accept loops so they see the stop.
        let _ = TcpStream::connect(("127.0.0.1", self.bmc_port));
        let _ = UnixStream::connect(&self.socket);
        let mut ends = self.ends.lock().unwrap();
        if let Some(b) = ends.bmc.take() {
            let _ = b.shutdown(std::net::Shutdown::Both);
        }
        if let Some(m) = ends.machine.take() {
            let _ = m.shutdown(std::net::Shutdown::Both);
        }
    }
}
