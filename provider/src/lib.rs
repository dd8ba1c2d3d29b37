//! The Beowulf provider: inventory, BMC drivers, boot plane, provisioning engine and CAPI controllers.
