//! Types, JSON Schemas and validation for the files that govern a cluster stack:
//! `metadata.yaml`, `csctl.yaml` and `clusteraddon.yaml`.
