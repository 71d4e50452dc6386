//! Provisioning: the `Provider` trait and its implementations, cloud-init and SSH bootstrap.
