//! The config file a `dayshift-node` reads at start (written by the ingress at bootstrap).
