//! Benchmarks against named peers; not part of `cargo test`; needs root (network namespaces, raw peers).
//! Run: `cargo run --release -p e2e --bin bench -- <workload>`. Workloads:
//! - `dhcp [--quick]`: perfdhcp DORA for 1,200 reserved clients, ours vs dnsmasq vs kea-dhcp4 (module
//!   `e2e::bench::dhcp`); prints a Markdown table and the last line `bench: dhcp=<ours/best peer> …`.
//! - `bmc [N]`: power status of N (default 100) ipmi_sim BMCs, our native IPMI client vs a loop of
//!   `ipmitool -I lanplus -C 3` calls (module `e2e::bench_bmc`); prints a Markdown table and the last line
//!   `bench: bmc=<ipmitool time / ours> …`.
//! - `publish [--quick]`: `csctl publish` of the seed stack + a 1 GiB blob vs oras-py and the Go `oras` CLI
//!   pushing the same files to a local docker-registry, first push and republish (module
//!   `e2e::bench::publish`); prints a Markdown table and the last line `bench: publish=<best peer/csctl time>
//!   publish_vs_oras_py=… publish_vs_oras=… publish_republish=<…> …`. Build csctl first:
//!   `cargo build --release -p csctl`; `bash .ci/install` builds oras.
//! - `tftp [--quick]`: atftp downloads, ours vs tftpd-hpa vs dnsmasq (module `e2e::bench::tftp`).
//! - `http [--quick]`: 64 MiB downloads and Range requests, ours vs nginx (module `e2e::bench::http`).
//! - `storm [--quick] [--sizes 100,500,1000] [--image DIR]`: a simulated rack booting at once, our boot plane
//!   vs dnsmasq + nginx (module `e2e::bench::storm`); time to 99% per N, when 99% finished each phase, UDP
//!   drops, server CPU and bytes per second; `--image` serves a real live image (kernel, initrd, squashfs).
//! - `all`: every workload, then one `bench:` line with every ratio and the total seconds.
use clap::{Parser, Subcommand};
use e2e::bench;

#[derive(Parser)]
#[command(about = "Beowulf benchmarks against real peers (prints ratios ours/peer)")]
struct Cli {
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Subcommand)]
enum Workload {
    /// perfdhcp DORA exchanges for 1,200 reserved clients: ours vs dnsmasq vs kea-dhcp4, each in its own netns.
    Dhcp {
        /// One short round (a few hundred exchanges per server): checks that every server answers (CI).
        #[arg(long)]
        quick: bool,
        /// Rounds of A B C (default 5; 1 with --quick).
        #[arg(long)]
        rounds: Option<usize>,
        /// Offered rate of the capacity run, DORA exchanges per second.
        #[arg(long)]
        rate: Option<u32>,
    },
    /// Concurrent atftp downloads (64 × 1 MiB, 8 × 64 MiB; blksize 1468 ± windowsize): ours vs tftpd-hpa vs
    /// dnsmasq, each in its own netns.
    Tftp {
        /// One short round with smaller files (a smoke test of the harness).
        #[arg(long)]
        quick: bool,
        /// Rounds of A B C (default 5; 1 with --quick).
        #[arg(long)]
        rounds: Option<usize>,
    },
    /// HTTP file serving: 64 concurrent 64 MiB downloads and Range requests on a 1 GiB file, ours (the boot
    /// plane's /images/) vs nginx.
    Http {
        /// One short round with smaller files (a smoke test of the harness).
        #[arg(long)]
        quick: bool,
        /// Rounds of A B (default 5; 1 with --quick).
        #[arg(long)]
        rounds: Option<usize>,
    },
    /// csctl publish vs oras-py and the Go oras CLI (seed stack + a big blob) to a local docker-registry: first
    /// push and republish, alternating per round. Needs `cargo build --release -p csctl` first.
    Publish {
        /// One round with a 64 MiB blob: checks that the harness and every client work (CI).
        #[arg(long)]
        quick: bool,
        /// Rounds of A B C (default 5; 1 with --quick).
        #[arg(long)]
        rounds: Option<usize>,
        /// Size of the extra blob in MiB (default 1024; 64 with --quick).
        #[arg(long)]
        blob_mib: Option<usize>,
        /// The csctl to measure (default: `csctl` beside this binary).
        #[arg(long)]
        csctl: Option<std::path::PathBuf>,
        /// A Python with oras-py (default: $BEOWULF_PEERS_DIR/venv/bin/python).
        #[arg(long)]
        python: Option<std::path::PathBuf>,
        /// The Go oras CLI (default: $BEOWULF_PEERS_DIR/go/oras-current/oras, built by `bash .ci/install`).
        #[arg(long)]
        oras: Option<std::path::PathBuf>,
    },
    /// A simulated rack booting at once (DHCP → TFTP → DHCP as iPXE → HTTP script → kernel + initrd) for
    /// N = 100, 500, 1000 clients: our boot plane vs dnsmasq + nginx; time until 99% have their initrd.
    Storm {
        /// One short round with N = 20, 50 (a smoke test of the harness).
        #[arg(long)]
        quick: bool,
        /// Rounds of A B (default 5; 1 with --quick).
        #[arg(long)]
        rounds: Option<usize>,
        /// Comma-separated client counts (default 100,500,1000; at most 4000).
        #[arg(long, value_delimiter = ',')]
        sizes: Option<Vec<usize>>,
        /// Pin the simulator to the last CPU and the servers to the others, as if the clients had CPUs of
        /// their own (by default all share every CPU, so a server with many threads also competes with the
        /// simulator). Needs at least 2 CPUs.
        #[arg(long)]
        pin: bool,
        /// Serve a real live image instead of synthetic files: a directory with `vmlinuz`, `initrd.img` and
        /// `rootfs.squashfs` (`VARIANT=ci bash images/hpc-node/build.sh DIR`); every client then also fetches
        /// the squashfs named by `root=live:` on its kernel line, as the booted initrd does.
        #[arg(long, value_name = "DIR")]
        image: Option<std::path::PathBuf>,
    },
    /// Every workload in one go (dhcp, tftp, http, bmc, publish, storm), each printing its table and `bench:`
    /// line, then one final `bench:` line with all ratios and the total time.
    All,
    /// Power status of N ipmi_sim BMCs: our native IPMI client vs an `ipmitool` loop.
    Bmc {
        /// Number of BMCs (1..=250).
        #[arg(default_value_t = 100)]
        n: usize,
    },
}

fn main() -> anyhow::Result<()> {
    // Our server under test is this binary re-executed as `beowulf` inside the server's namespace.
    let mut args = std::env::args_os();
    let _ = args.next();
    if args.next().is_some_and(|a| a == bench::BEOWULF_ARG) {
        let cli = beowulf::cli::Cli::parse_from(std::iter::once("beowulf".into()).chain(args));
        return tokio::runtime::Runtime::new()?.block_on(beowulf::cli::run(cli));
    }
    let cli = Cli::parse();
    match cli.workload {
        Workload::Dhcp {
            quick,
            rounds,
            rate,
        } => {
            let mut opts = if quick {
                bench::dhcp::Options::quick()
            } else {
                bench::dhcp::Options::full()
            };
            if let Some(r) = rounds {
                opts.rounds = r.max(1);
            }
            if let Some(r) = rate {
                opts.capacity_rate = r.max(1);
            }
            let line = bench::dhcp::run(&opts)?;
            println!("bench: {line}");
        }
        Workload::Tftp { quick, rounds } => {
            let mut opts = if quick {
                bench::tftp::Options::quick()
            } else {
                bench::tftp::Options::full()
            };
            if let Some(r) = rounds {
                opts.rounds = r.max(1);
            }
            println!("bench: {}", bench::tftp::run(&opts)?);
        }
        Workload::Http { quick, rounds } => {
            let mut opts = if quick {
                bench::http::Options::quick()
            } else {
                bench::http::Options::full()
            };
            if let Some(r) = rounds {
                opts.rounds = r.max(1);
            }
            println!("bench: {}", bench::http::run(&opts)?);
        }
        Workload::Publish {
            quick,
            rounds,
            blob_mib,
            csctl,
            python,
            oras,
        } => {
            let mut opts = if quick {
                bench::publish::Options::quick()
            } else {
                bench::publish::Options::full()
            };
            if let Some(r) = rounds {
                opts.rounds = r.max(1);
            }
            if let Some(m) = blob_mib {
                opts.blob_mib = m.max(1);
            }
            opts.csctl = csctl;
            opts.python = python;
            opts.oras = oras;
            println!("bench: {}", bench::publish::run(&opts)?);
        }
        Workload::Storm {
            quick,
            rounds,
            sizes,
            pin,
            image,
        } => {
            let mut opts = if quick {
                bench::storm::Options::quick()
            } else {
                bench::storm::Options::full()
            };
            if let Some(r) = rounds {
                opts.rounds = r.max(1);
            }
            if let Some(s) = sizes.filter(|s| !s.is_empty()) {
                opts.sizes = s;
            }
            opts.pin = pin;
            opts.image = image;
            println!("bench: {}", bench::storm::run(&opts)?);
        }
        Workload::All => all()?,
        Workload::Bmc { n } => {
            let line = e2e::bench_bmc::run(&[n.to_string()])?;
            println!("bench: {line}");
        }
    }
    Ok(())
}

/// One workload of `all`: its table goes to stdout as it runs; its `bench:` fields are collected.
fn section(
    name: &str,
    lines: &mut Vec<String>,
    failed: &mut Vec<String>,
    f: impl FnOnce() -> anyhow::Result<String>,
) {
    let t0 = std::time::Instant::now();
    println!("\n## {name}\n");
    match f() {
        Ok(line) => {
            println!("bench: {line}");
            eprintln!("bench all: {name} took {:.0} s", t0.elapsed().as_secs_f64());
            lines.push(line);
        }
        Err(e) => {
            eprintln!("bench all: {name} failed: {e:#}");
            lines.push(format!("{name}=failed"));
            failed.push(name.to_string());
        }
    }
}

fn all() -> anyhow::Result<()> {
    let t0 = std::time::Instant::now();
    let mut lines = Vec::new();
    let mut failed = Vec::new();
    section("dhcp", &mut lines, &mut failed, || {
        bench::dhcp::run(&bench::dhcp::Options::full())
    });
    section("tftp", &mut lines, &mut failed, || {
        bench::tftp::run(&bench::tftp::Options::full())
    });
    section("http", &mut lines, &mut failed, || {
        bench::http::run(&bench::http::Options::full())
    });
    section("bmc", &mut lines, &mut failed, || {
        e2e::bench_bmc::run(&["100".to_string()])
    });
    section("publish", &mut lines, &mut failed, || {
        bench::publish::run(&bench::publish::Options::full())
    });
    section("storm", &mut lines, &mut failed, || {
        bench::storm::run(&bench::storm::Options::full())
    });
    let secs = t0.elapsed().as_secs_f64();
    println!("\nbench: {} all_seconds={secs:.0}", lines.join(" "));
    if !failed.is_empty() {
        anyhow::bail!("failed workloads: {}", failed.join(", "));
    }
    Ok(())
}
