//! The open-file limit. A service under systemd starts with a soft limit of 1024 descriptors and a hard one far
//! above it, and a rack booting at once needs more than 1024: each TFTP transfer holds a socket and its file
//! (up to `TftpConfig::max_lock_step_transfers` of them on the polling loops), each HTTP download a connection
//! and its file. Like Go's runtime, the process raises its soft limit to the hard one at start; a limit set
//! lower on purpose (`LimitNOFILE=`, `ulimit -Hn`) is a hard limit, and stays.

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the limit now in force (`None` if it cannot be
/// read). Failing to raise it is not an error: the process runs with what it has.
pub fn raise_limit() -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return Some(hard);
    }
    Some(soft)
}

#[cfg(test)]
mod tests {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one_and_never_above() {
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        // Lowered as systemd starts a service (when the hard limit allows it), then raised back.
        let lowered = soft.min(hard).min(1024);
        setrlimit(Resource::RLIMIT_NOFILE, lowered, hard).unwrap();
        assert_eq!(super::raise_limit(), Some(hard));
        assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap(), (hard, hard));
    }
}
