//! csctl: turns a cluster-stack directory into a reproducible, versioned release.
