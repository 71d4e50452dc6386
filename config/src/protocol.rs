//! Messages between `dayshift-node` and the ingress (registration, heartbeat, goodbye).
