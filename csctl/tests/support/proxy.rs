//! An HTTP/1.1 proxy between csctl and the registry that records every request (method, path, status,
//! body bytes, Content-Range) and can interrupt one: hold a chosen PATCH before forwarding it, or cut a
//! PATCH body after a number of bytes. The registry builds its upload URLs from the Host header, so all
//! follow-up requests come back through the proxy.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

#[derive(Clone, Debug)]
pub struct Record {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub body_len: u64,
    pub content_range: Option<String>,
    /// The [`Proxy::mark`] in effect when the request arrived (it is recorded when it completes, which for a
    /// killed client's last requests can be after a later mark).
    pub epoch: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stall {
    None,
    /// Hold the n-th PATCH (1-based) without forwarding any of it: the registry's session stays exactly at
    /// a chunk boundary, like a client killed between two chunks.
    BeforePatch(u32),
    /// Forward request bodies until this many body bytes in total went through, then hold the rest: the
    /// registry sees a PATCH cut in the middle.
    MidBody(u64),
}

#[derive(Default)]
struct State {
    records: Vec<Record>,
    epoch: usize,
    stall: Option<Stall>,
    stalled: bool,
    patches: u32,
    body_bytes: u64,
}

pub struct Proxy {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl Proxy {
    pub fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let upstream = upstream.to_string();
        let st = state.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { continue };
                let st = st.clone();
                let upstream = upstream.clone();
                thread::spawn(move || {
                    let _ = handle(client, &upstream, &st);
                });
            }
        });
        Proxy { addr, state }
    }

    pub fn set_stall(&self, stall: Stall) {
        let mut s = self.state.lock().unwrap();
        s.stall = Some(stall);
        s.stalled = false;
        s.patches = 0;
        s.body_bytes = 0;
    }

    pub fn stalled(&self) -> bool {
        self.state.lock().unwrap().stalled
    }

    /// Starts a new epoch and returns it, to pass to `records_since`: requests that arrive from now on.
    pub fn mark(&self) -> usize {
        let mut s = self.state.lock().unwrap();
        s.epoch += 1;
        s.epoch
    }

    /// The requests that arrived since `mark` (0: all), in the order they completed.
    pub fn records_since(&self, mark: usize) -> Vec<Record> {
        let s = self.state.lock().unwrap();
        s.records
            .iter()
            .filter(|r| r.epoch >= mark)
            .cloned()
            .collect()
    }
}

/// A request or status line and its headers.
type Head = (String, Vec<(String, String)>);

fn read_head(r: &mut impl BufRead) -> std::io::Result<Option<Head>> {
    let mut first = String::new();
    if r.read_line(&mut first)? == 0 {
        return Ok(None);
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    Ok(Some((first.trim_end().to_string(), headers)))
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn write_head(
    w: &mut impl Write,
    first: &str,
    headers: &[(String, String)],
) -> std::io::Result<()> {
    let mut out = format!("{first}\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    w.write_all(out.as_bytes())
}

/// Blocks until the client goes away (killed), then returns: the held request is never completed.
fn hold(client: &mut BufReader<TcpStream>) {
    let mut buf = [0u8; 65536];
    while matches!(client.read(&mut buf), Ok(n) if n > 0) {}
}

fn handle(client: TcpStream, upstream: &str, state: &Mutex<State>) -> std::io::Result<()> {
    let mut client_w = client.try_clone()?;
    let mut client = BufReader::new(client);
    let up = TcpStream::connect(upstream)?;
    let mut up_w = up.try_clone()?;
    let mut up = BufReader::new(up);
    loop {
        let Some((first, headers)) = read_head(&mut client)? else {
            return Ok(());
        };
        let mut parts = first.split(' ');
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let len: u64 = header(&headers, "Content-Length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let content_range = header(&headers, "Content-Range").map(str::to_string);
        let mut cut_after: Option<u64> = None;
        let epoch;
        {
            let mut s = state.lock().unwrap();
            epoch = s.epoch;
            if method == "PATCH" {
                s.patches += 1;
            }
            match s.stall {
                Some(Stall::BeforePatch(n))
                    if method == "PATCH" && s.patches == n && !s.stalled =>
                {
                    s.stalled = true;
                    s.records.push(Record {
                        method,
                        path,
                        status: 0,
                        body_len: 0,
                        content_range,
                        epoch,
                    });
                    drop(s);
                    hold(&mut client);
                    return Ok(());
                }
                Some(Stall::MidBody(limit)) if !s.stalled && s.body_bytes + len > limit => {
                    cut_after = Some(limit - s.body_bytes);
                }
                _ => {}
            }
            s.body_bytes += len;
        }
        write_head(&mut up_w, &first, &headers)?;
        let to_send = cut_after.unwrap_or(len);
        let copied = std::io::copy(&mut (&mut client).take(to_send), &mut up_w)?;
        if cut_after.is_some() {
            let mut s = state.lock().unwrap();
            s.stalled = true;
            s.records.push(Record {
                method,
                path,
                status: 0,
                body_len: copied,
                content_range,
                epoch,
            });
            drop(s);
            up_w.flush()?;
            hold(&mut client);
            // Dropping the upstream connection now leaves the registry with a partial chunk.
            let _ = up_w.shutdown(std::net::Shutdown::Both);
            return Ok(());
        }
        let Some((status_line, resp_headers)) = read_head(&mut up)? else {
            return Ok(());
        };
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        write_head(&mut client_w, &status_line, &resp_headers)?;
        let no_body =
            method == "HEAD" || status == 204 || status == 304 || (100..200).contains(&status);
        if !no_body {
            if let Some(n) =
                header(&resp_headers, "Content-Length").and_then(|v| v.parse::<u64>().ok())
            {
                std::io::copy(&mut (&mut up).take(n), &mut client_w)?;
            } else if header(&resp_headers, "Transfer-Encoding")
                .is_some_and(|v| v.contains("chunked"))
            {
                loop {
                    let mut size_line = String::new();
                    up.read_line(&mut size_line)?;
                    client_w.write_all(size_line.as_bytes())?;
                    let size =
                        u64::from_str_radix(size_line.trim().split(';').next().unwrap_or("0"), 16)
                            .unwrap_or(0);
                    std::io::copy(&mut (&mut up).take(size + 2), &mut client_w)?;
                    if size == 0 {
                        break;
                    }
                }
            } else {
                std::io::copy(&mut up, &mut client_w)?;
                return Ok(());
            }
        }
        client_w.flush()?;
        state.lock().unwrap().records.push(Record {
            method,
            path,
            status,
            body_len: copied,
            content_range,
            epoch,
        });
    }
}
