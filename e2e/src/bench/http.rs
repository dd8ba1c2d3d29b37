//! `bench http`: the boot plane's file serving (`/images/<image>/<file>` of `beowulf standalone`) against nginx
//! (Debian), both in a network namespace of their own joined by a veth pair to a client namespace.
//!
//! Two workloads, alternated ours/nginx every round: 64 concurrent downloads of a 64 MiB initrd-sized file
//! (aggregate MiB/s), and Range requests of 128 KiB at pseudo-random offsets of a 1 GiB squashfs-sized file
//! from 64 keep-alive connections (requests/s). The client is reqwest (hyper) on one thread in the client
//! namespace; it checks every status, every `Content-Range` and every byte against the file's content,
//! which is a function of the offset (so it needs no copy in memory).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::{Metric, Netns, alive, have, in_netns, netns_pairs, shm_dir, start_beowulf, table};

const SERVERS: [&str; 2] = ["beowulf", "nginx"];
const MIB: u64 = 1 << 20;
const PORT: u16 = 8080;

#[derive(Debug, Clone)]
pub struct Options {
    pub rounds: usize,
    /// (concurrent downloads, file size).
    pub download: (usize, u64),
    /// Size of the file read with Range requests, connections, requests per connection, range length.
    pub range_file: u64,
    pub range_conns: usize,
    pub range_requests: usize,
    pub range_len: u64,
}

impl Options {
    pub fn full() -> Self {
        Options {
            rounds: 5,
            download: (64, 64 * MIB),
            range_file: 1024 * MIB,
            range_conns: 64,
            range_requests: 32,
            range_len: 128 * 1024,
        }
    }

    pub fn quick() -> Self {
        Options {
            rounds: 1,
            download: (8, 8 * MIB),
            range_file: 64 * MIB,
            range_conns: 8,
            range_requests: 8,
            range_len: 128 * 1024,
        }
    }
}

fn server_ip(k: usize) -> String {
    format!("10.213.{k}.1")
}

fn client_ip(k: usize) -> String {
    format!("10.213.{k}.2")
}

/// The 8-byte word at index `i` of a file with `seed` (splitmix64).
fn word(seed: u64, i: u64) -> u64 {
    let mut z = i
        .wrapping_add(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Does `chunk` equal the file's bytes at `offset`?
fn matches(seed: u64, offset: u64, chunk: &[u8]) -> bool {
    chunk.iter().enumerate().all(|(j, &b)| {
        let pos = offset + j as u64;
        word(seed, pos / 8).to_le_bytes()[(pos % 8) as usize] == b
    })
}

/// Faster check for the common aligned case: whole words compared at once.
fn verify(seed: u64, offset: u64, chunk: &[u8]) -> bool {
    let head = ((8 - offset % 8) % 8).min(chunk.len() as u64) as usize;
    if !matches(seed, offset, &chunk[..head]) {
        return false;
    }
    let rest = &chunk[head..];
    let base = (offset + head as u64) / 8;
    let mut words = rest.chunks_exact(8);
    for (n, w) in words.by_ref().enumerate() {
        if w != word(seed, base + n as u64).to_le_bytes() {
            return false;
        }
    }
    let tail = words.remainder();
    matches(seed, offset + (chunk.len() - tail.len()) as u64, tail)
}

fn write_file(path: &Path, seed: u64, len: u64) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt as _;
    let mut f = std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    let mut buf = Vec::with_capacity(1 << 20);
    let mut i = 0u64;
    while i * 8 < len {
        buf.clear();
        while buf.len() < 1 << 20 && i * 8 < len {
            buf.extend_from_slice(&word(seed, i).to_le_bytes());
            i += 1;
        }
        let keep = buf.len().min((len - (i * 8 - buf.len() as u64)) as usize);
        f.write_all(&buf[..keep])?;
    }
    f.flush()?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))?;
    Ok(())
}

/// Downloads `url` (optionally a range) and checks status, length and bytes; returns the byte count.
async fn fetch(
    client: &reqwest::Client,
    url: &str,
    seed: u64,
    range: Option<(u64, u64)>,
    total: u64,
) -> anyhow::Result<u64> {
    let mut req = client.get(url);
    if let Some((start, len)) = range {
        req = req.header("Range", format!("bytes={start}-{}", start + len - 1));
    }
    let mut resp = req.send().await.with_context(|| format!("GET {url}"))?;
    let (want_status, offset, want_len) = match range {
        Some((start, len)) => (206, start, len),
        None => (200, 0, total),
    };
    if resp.status().as_u16() != want_status {
        bail!("GET {url} {range:?}: status {}", resp.status());
    }
    if let Some((start, len)) = range {
        let cr = resp
            .headers()
            .get("content-range")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let want = format!("bytes {start}-{}/{total}", start + len - 1);
        if cr != want {
            bail!("GET {url}: Content-Range {cr:?}, expected {want:?}");
        }
    }
    let mut got = 0u64;
    while let Some(chunk) = resp.chunk().await? {
        if !verify(seed, offset + got, &chunk) {
            bail!("GET {url}: wrong bytes at offset {}", offset + got);
        }
        got += chunk.len() as u64;
    }
    if got != want_len {
        bail!("GET {url}: {got} bytes, expected {want_len}");
    }
    Ok(got)
}

/// `n` concurrent downloads of the whole file; returns the wall time.
fn downloads(client_ns: &Netns, url: String, n: usize, len: u64) -> anyhow::Result<Duration> {
    in_netns(client_ns, move |rt| {
        rt.block_on(async move {
            let client = Arc::new(client()?);
            let t0 = Instant::now();
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..n {
                let (c, u) = (client.clone(), url.clone());
                set.spawn(async move { fetch(&c, &u, 1, None, len).await });
            }
            while let Some(r) = set.join_next().await {
                r??;
            }
            Ok(t0.elapsed())
        })
    })
}

/// `conns` connections each doing `per` sequential Range requests; returns the wall time.
fn ranges(
    client_ns: &Netns,
    url: String,
    opts: &Options,
    round: usize,
) -> anyhow::Result<Duration> {
    let (conns, per, len, total) = (
        opts.range_conns,
        opts.range_requests,
        opts.range_len,
        opts.range_file,
    );
    in_netns(client_ns, move |rt| {
        rt.block_on(async move {
            let t0 = Instant::now();
            let mut set = tokio::task::JoinSet::new();
            for c in 0..conns {
                let u = url.clone();
                set.spawn(async move {
                    // One client (one keep-alive connection) per worker, like a kernel's squashfs reader.
                    let client = client()?;
                    for r in 0..per {
                        let blocks = (total - len) / len;
                        let b = word(7 + round as u64, (c * per + r) as u64) % blocks.max(1);
                        fetch(&client, &u, 2, Some((b * len, len)), total).await?;
                    }
                    anyhow::Ok(())
                });
            }
            while let Some(r) = set.join_next().await {
                r??;
            }
            Ok(t0.elapsed())
        })
    })
}

fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(300))
        .build()?)
}

fn inventory(served: &Path) -> String {
    format!(
        "namespace: bench\nnetworks:\n  - name: bench\n    subnet: 10.213.0.0/24\n    gateway: {gw}\n    bootServer: {gw}\n\
         images:\n  - name: bench\n    kernel: {{ path: {s}/images/bench/initrd.img }}\n    rootfs: {{ path: {s}/images/bench/root.squashfs }}\n    cmdline: \"console=ttyS0\"\nhosts: []\n",
        gw = server_ip(0),
        s = served.display(),
    )
}

pub fn run(opts: &Options) -> anyhow::Result<String> {
    for tool in ["nginx", "timeout"] {
        if !have(tool) {
            bail!("{tool} is missing: run `bash .ci/install`");
        }
    }
    let served = shm_dir("bench-http-root")?;
    let work = shm_dir("bench-http-work")?;
    let (n, len) = opts.download;
    // nginx serves `served` as its root; ours names the same files in its inventory.
    let files = served.path().join("images/bench");
    std::fs::create_dir_all(&files)?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        for d in [served.path().join("images"), files.clone()] {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    write_file(&files.join("initrd.img"), 1, len)?;
    write_file(&files.join("root.squashfs"), 2, opts.range_file)?;

    let pairs = netns_pairs("http", "bh", SERVERS.len(), |k| {
        (
            format!("{}/24", server_ip(k)),
            format!("{}/24", client_ip(k)),
        )
    })?;
    let inv = work.path().join("inventory.yaml");
    std::fs::write(&inv, inventory(served.path()))?;
    let logs = [
        work.path().join("beowulf.log"),
        work.path().join("nginx.err"),
    ];
    let mut procs = [
        start_beowulf(
            &pairs[0].server,
            Duration::from_secs(3600),
            &inv,
            &pairs[0].server_if,
            served.path(),
            PORT,
            &logs[0],
        )?,
        super::start_nginx(
            &pairs[1].server,
            &format!("{}:{PORT}", server_ip(1)),
            served.path(),
            work.path(),
        )?,
    ];
    let url = |k: usize, file: &str| format!("http://{}:{PORT}/images/bench/{file}", server_ip(k));

    // Ready when a first range request is answered correctly (polled with a deadline).
    for k in 0..SERVERS.len() {
        let deadline = Instant::now() + Duration::from_secs(30);
        let u = url(k, "root.squashfs");
        let total = opts.range_file;
        loop {
            alive(&mut procs[k], &logs[k])?;
            let u2 = u.clone();
            let probe = in_netns(&pairs[k].client, move |rt| {
                rt.block_on(
                    async move { fetch(&client()?, &u2, 2, Some((4096, 100)), total).await },
                )
            });
            match probe {
                Ok(_) => break,
                Err(e) if Instant::now() > deadline => {
                    return Err(e.context(format!("{} did not answer within 30 s", SERVERS[k])));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    eprintln!(
        "bench http: {} round(s): {n} × {} MiB downloads, {} × {} Range requests of {} KiB on {} MiB",
        opts.rounds,
        len / MIB,
        opts.range_conns,
        opts.range_requests,
        opts.range_len / 1024,
        opts.range_file / MIB
    );
    let mut dl = vec![Vec::new(); SERVERS.len()];
    let mut rq = vec![Vec::new(); SERVERS.len()];
    let mut dl_cpu = vec![Vec::new(); SERVERS.len()];
    let mut rq_cpu = vec![Vec::new(); SERVERS.len()];
    let requests = (opts.range_conns * opts.range_requests) as f64;
    let gib = (n as u64 * len) as f64 / (1u64 << 30) as f64;
    for round in 1..=opts.rounds {
        for k in 0..SERVERS.len() {
            alive(&mut procs[k], &logs[k])?;
            // The server's CPU (ours: the process; nginx: master and workers) during each workload.
            let cpu = || super::cpu_seconds(procs[k].child.id());
            let c0 = cpu();
            let t = downloads(&pairs[k].client, url(k, "initrd.img"), n, len)?;
            let c1 = cpu();
            let mibs = (n as u64 * len) as f64 / MIB as f64 / t.as_secs_f64();
            let t2 = ranges(&pairs[k].client, url(k, "root.squashfs"), opts, round)?;
            let c2 = cpu();
            let rps = requests / t2.as_secs_f64();
            eprintln!(
                "round {round} {:>8}: downloads {mibs:>8.1} MiB/s ({:.2} s, server CPU {:.2} s); ranges {rps:>8.0} req/s ({:.2} s, server CPU {:.2} s)",
                SERVERS[k],
                t.as_secs_f64(),
                c1 - c0,
                t2.as_secs_f64(),
                c2 - c1
            );
            dl[k].push(mibs);
            rq[k].push(rps);
            dl_cpu[k].push((c1 - c0) / gib);
            rq_cpu[k].push((c2 - c1) * 1e6 / requests);
        }
    }
    for k in 0..SERVERS.len() {
        alive(&mut procs[k], &logs[k])?;
    }
    let metrics = [
        Metric {
            name: format!("HTTP {n} × {} MiB downloads", len / MIB),
            unit: "MiB/s",
            higher_is_better: true,
            values: dl,
        },
        Metric {
            name: format!(
                "HTTP Range {} KiB on {} MiB, {} connections",
                opts.range_len / 1024,
                opts.range_file / MIB,
                opts.range_conns
            ),
            unit: "req/s",
            higher_is_better: true,
            values: rq,
        },
        Metric {
            name: "server CPU per GiB downloaded".into(),
            unit: "s",
            higher_is_better: false,
            values: dl_cpu,
        },
        Metric {
            name: "server CPU per Range request".into(),
            unit: "µs",
            higher_is_better: false,
            values: rq_cpu,
        },
    ];
    println!("{}", table(&SERVERS, &metrics));
    let ratio = |m: &Metric| super::summary(&m.values[0]).0 / super::summary(&m.values[1]).0;
    let (a, b) = (ratio(&metrics[0]), ratio(&metrics[1]));
    // CPU: nginx's over ours, so that above 1 means ours uses less, as for the rates.
    let (c, d) = (1.0 / ratio(&metrics[2]), 1.0 / ratio(&metrics[3]));
    Ok(format!(
        "http={:.2} http_download={a:.2} http_range={b:.2} http_download_cpu={c:.2} http_range_cpu={d:.2}",
        a.min(b)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_checked_at_any_offset() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        write_file(&p, 3, 100_003).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(bytes.len(), 100_003);
        for (off, n) in [(0, 100_003), (5, 17), (8, 64), (99_990, 13), (13, 0)] {
            assert!(verify(3, off as u64, &bytes[off..off + n]), "{off}+{n}");
        }
        assert!(!verify(3, 1, &bytes[0..20]), "shifted by one byte");
        assert!(!verify(4, 0, &bytes[0..64]), "other seed");
        let mut bad = bytes[16..80].to_vec();
        bad[33] ^= 1;
        assert!(!verify(3, 16, &bad));
    }
}
