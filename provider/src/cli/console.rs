//! `beowulf console`: a host's serial console, interactive over IPMI Serial-over-LAN (like `ipmitool sol
//! activate`), or read from what a standalone server captured (`--log`).

use std::io::{Read as _, Write as _};
use std::os::fd::AsFd as _;

use anyhow::{Context, bail};
use clap::Args;
use tokio::sync::mpsc;

use super::bmc::{Connection, connect};
use crate::bmc::ipmi::sol::{SolEnd, SolInput};
use crate::console::capture::KEEPALIVE;
use crate::inventory::Inventory;

#[derive(Debug, Args)]
#[command(after_help = "Keys (at the start of a line, as in ssh):\n  \
~.  leave the console\n  ~B  send a break\n  ~~  send a ~\n  ~?  this list\n\n\
A BMC has one serial console session at a time. When `beowulf standalone` is capturing the host's console,\n\
take it over with --force; the server gets it back within seconds after you leave.\n\n\
Examples:\n  beowulf console node-0 --inventory hosts.yaml\n  \
beowulf console --address ipmi://10.0.0.21 --username admin --password-file pw\n  \
beowulf console node-0 --log --server http://10.0.0.1:8080 --follow")]
pub struct ConsoleArgs {
    /// The host: its name in the inventory (--inventory), or on the standalone server (--log).
    pub host: Option<String>,
    #[command(flatten)]
    pub conn: Connection,
    /// Take the console over when another session holds it (another console, or a capturing server).
    #[arg(long)]
    pub force: bool,
    /// Only read: print the console the standalone server captured for HOST (no BMC is contacted).
    #[arg(long)]
    pub log: bool,
    /// With --log: keep printing new lines as they are captured.
    #[arg(long, requires = "log")]
    pub follow: bool,
    /// With --log: how many of the last lines to print first.
    #[arg(long, default_value_t = 200, value_name = "N", requires = "log")]
    pub lines: usize,
    /// With --log: the standalone server's HTTP address.
    #[arg(
        long,
        default_value = "http://127.0.0.1:8080",
        value_name = "URL",
        env = "BEOWULF_SERVER"
    )]
    pub server: String,
    /// The escape character for the keys above, or `none`.
    #[arg(long, default_value = "~", value_name = "CHAR")]
    pub escape: String,
}

pub async fn run(args: ConsoleArgs) -> anyhow::Result<()> {
    if args.log {
        let host = args
            .host
            .as_deref()
            .context("--log needs the host's name: beowulf console NAME --log")?;
        return read_log(&args.server, host, args.lines, args.follow).await;
    }
    let escape = match args.escape.as_str() {
        "none" => None,
        e if e.len() == 1 && e.is_ascii() => Some(e.as_bytes()[0]),
        e => bail!("--escape takes one ASCII character or `none`, not {e:?}"),
    };
    let options = args.conn.options()?;
    let (name, address, login) = match (&args.conn.inventory, &args.conn.address) {
        (Some(path), _) => {
            let host = args.host.clone().context(
                "with --inventory, name the host: beowulf console NAME --inventory FILE",
            )?;
            let p = path.clone();
            let inventory = tokio::task::spawn_blocking(move || Inventory::load(&p))
                .await
                .context("loading the inventory")??;
            if inventory.directory.host(&host).is_none() {
                bail!("the inventory has no host {host:?}");
            }
            let b = inventory
                .bmc(&host)
                .with_context(|| format!("host {host:?} has no `bmc` entry in the inventory"))?;
            (host, b.address.clone(), args.conn.login_for(b)?)
        }
        (None, Some(address)) => (
            args.host.clone().unwrap_or_else(|| address.clone()),
            address.clone(),
            args.conn.login()?,
        ),
        (None, None) => bail!(
            "give the host's BMC: beowulf console NAME --inventory FILE, or --address URL (or read the captured \
             log with --log)"
        ),
    };
    let bmc = connect(&address, login, options)?;
    let console = bmc.console(args.force, KEEPALIVE).await?;
    interactive(console, &name, escape).await
}

async fn interactive(
    console: crate::bmc::ipmi::sol::Console,
    name: &str,
    escape: Option<u8>,
) -> anyhow::Result<()> {
    let esc = escape.map_or_else(|| "(no escape)".to_string(), |e| char::from(e).to_string());
    eprint!("[beowulf console: {name}; {esc}. leaves, {esc}? lists the keys]\r\n");
    let terminal = RawTerminal::enter();
    let (in_tx, in_rx) = mpsc::channel(16);
    let (out_tx, mut out_rx) = mpsc::channel(64);
    // A thread of its own, not a runtime task: a read blocked on the terminal must not keep the process
    // from exiting when the BMC ends the console.
    std::thread::spawn(move || read_keys(escape, in_tx));
    let run = tokio::spawn(console.run(in_rx, out_tx));
    // Console output is a few KB/s at most: plain writes to the terminal.
    let mut stdout = std::io::stdout();
    while let Some(b) = out_rx.recv().await {
        stdout.write_all(&b)?;
        stdout.flush()?;
    }
    let end = run.await.context("the console task failed")?;
    drop(terminal);
    match end? {
        SolEnd::Closed => eprintln!("\r\n[beowulf console: closed]"),
        SolEnd::Deactivated => {
            eprintln!("\r\n[beowulf console: the BMC ended it (taken over by another session?)]")
        }
    }
    Ok(())
}

/// Keys typed at the console, escapes applied, until `~.` or the end of input.
fn read_keys(escape: Option<u8>, tx: mpsc::Sender<SolInput>) {
    let mut keys = Escapes::new(escape);
    let mut stdin = std::io::stdin();
    let mut buf = [0u8; 256];
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        for k in keys.feed(&buf[..n]) {
            let input = match k {
                Key::Send(b) => SolInput::Data(b),
                Key::Break => SolInput::Break,
                Key::Help => {
                    let e = escape.map_or('~', char::from);
                    eprint!("\r\n[{e}. leave, {e}B break, {e}{e} send {e}, {e}? this list]\r\n");
                    continue;
                }
                Key::Quit => return,
            };
            if tx.blocking_send(input).is_err() {
                return;
            }
        }
    }
}

/// What typed bytes mean.
#[derive(Debug, PartialEq, Eq)]
enum Key {
    Send(Vec<u8>),
    Break,
    Help,
    Quit,
}

/// ssh-style escapes: the escape character at the start of a line, then `.`, `B`, `?` or itself.
struct Escapes {
    escape: Option<u8>,
    line_start: bool,
    pending: bool,
}

impl Escapes {
    fn new(escape: Option<u8>) -> Escapes {
        Escapes {
            escape,
            line_start: true,
            pending: false,
        }
    }

    fn feed(&mut self, input: &[u8]) -> Vec<Key> {
        let mut keys = Vec::new();
        let mut plain = Vec::new();
        let flush = |plain: &mut Vec<u8>, keys: &mut Vec<Key>| {
            if !plain.is_empty() {
                keys.push(Key::Send(std::mem::take(plain)));
            }
        };
        for &b in input {
            if self.pending {
                self.pending = false;
                let esc = self.escape.unwrap_or(b'~');
                match b {
                    b'.' => {
                        flush(&mut plain, &mut keys);
                        keys.push(Key::Quit);
                        return keys;
                    }
                    b'B' => {
                        flush(&mut plain, &mut keys);
                        keys.push(Key::Break);
                    }
                    b'?' => {
                        flush(&mut plain, &mut keys);
                        keys.push(Key::Help);
                    }
                    c if c == esc => plain.push(c),
                    c => plain.extend_from_slice(&[esc, c]),
                }
                self.line_start = false;
                continue;
            }
            if self.line_start && Some(b) == self.escape {
                self.pending = true;
                continue;
            }
            plain.push(b);
            self.line_start = b == b'\r' || b == b'\n';
        }
        flush(&mut plain, &mut keys);
        keys
    }
}

/// The terminal in raw mode (keys go to the console as typed, ^C included) until dropped; nothing when
/// standard input is not a terminal.
struct RawTerminal {
    saved: Option<nix::sys::termios::Termios>,
}

impl RawTerminal {
    fn enter() -> RawTerminal {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let Ok(saved) = tcgetattr(stdin.as_fd()) else {
            return RawTerminal { saved: None };
        };
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        if tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).is_err() {
            return RawTerminal { saved: None };
        }
        RawTerminal { saved: Some(saved) }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let stdin = std::io::stdin();
            let _ = nix::sys::termios::tcsetattr(
                stdin.as_fd(),
                nix::sys::termios::SetArg::TCSANOW,
                saved,
            );
        }
    }
}

/// Prints the captured console of `host` from the standalone server at `server`.
async fn read_log(server: &str, host: &str, lines: usize, follow: bool) -> anyhow::Result<()> {
    let base = server.trim_end_matches('/');
    let url = format!(
        "{base}/api/hosts/{host}/console?lines={lines}{}",
        if follow { "&follow=1" } else { "" }
    );
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .build()?;
    let mut resp = client.get(&url).send().await.with_context(|| {
        format!("cannot reach the standalone server at {base} (give --server URL)")
    })?;
    if !resp.status().is_success() {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        bail!("{base}: {status}: {}", text.trim());
    }
    let mut out = std::io::stdout();
    while let Some(chunk) = resp
        .chunk()
        .await
        .context("the server closed the console stream")?
    {
        out.write_all(&chunk)?;
        out.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_work_at_line_start_only() {
        let mut e = Escapes::new(Some(b'~'));
        assert_eq!(e.feed(b"a~b\r"), vec![Key::Send(b"a~b\r".to_vec())]);
        assert_eq!(e.feed(b"~~x"), vec![Key::Send(b"~x".to_vec())]);
        assert_eq!(e.feed(b"\r~B"), vec![Key::Send(b"\r".to_vec()), Key::Break]);
        assert_eq!(e.feed(b"\n~"), vec![Key::Send(b"\n".to_vec())]);
        // Split across reads.
        assert_eq!(e.feed(b"?"), vec![Key::Help]);
        assert_eq!(e.feed(b"\r~z"), vec![Key::Send(b"\r~z".to_vec())]);
        assert_eq!(
            e.feed(b"\r~.ignored"),
            vec![Key::Send(b"\r".to_vec()), Key::Quit]
        );
        // The first key of a session is at a line start.
        assert_eq!(Escapes::new(Some(b'~')).feed(b"~."), vec![Key::Quit]);
        assert_eq!(
            Escapes::new(None).feed(b"~."),
            vec![Key::Send(b"~.".to_vec())]
        );
    }
}
