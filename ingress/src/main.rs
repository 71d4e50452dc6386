//! `dayshift`: the ingress daemon and operator CLI.

fn main() {
    println!("dayshift {}", env!("CARGO_PKG_VERSION"));
}
