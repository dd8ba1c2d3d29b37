//! Benchmarks against real peers, each printing a ratio against a named peer. Not part of `cargo test`.
//!
//! `cargo run --release -p e2e --bin bench -- <workload>`; workloads:
//! - `bmc [N]`: power status of N (default 100) ipmi_sim BMCs on 127.0.x.y, read by our native IPMI client vs
//!   a loop of `ipmitool -I lanplus -C 3` calls.

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("bmc") => e2e::bench_bmc::run(&args[1..]),
        _ => anyhow::bail!("usage: bench <workload> [args]; workloads: bmc [N]"),
    }
}
