//! `dayshift-node`: the inference server that runs on a rented GPU server.

fn main() {
    println!("dayshift-node {}", env!("CARGO_PKG_VERSION"));
}
