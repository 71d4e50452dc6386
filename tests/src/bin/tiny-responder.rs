//! `tiny-responder --config FILE` or `tiny-responder --listen IP:PORT [--reply TEXT]`:
//! a minimal HTTP responder used as the "binary" that bootstrap and local-provider tests
//! start. The config file holds `listen=IP:PORT` and `reply=TEXT` lines; every request
//! gets `200` with TEXT.

use std::io::{Read, Write};
use std::net::TcpListener;

fn main() {
    if let Err(e) = run() {
        eprintln!("tiny-responder: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
    };
    let text = match (flag("--config"), flag("--listen")) {
        (Some(path), _) => {
            std::fs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"))?
        }
        (None, Some(listen)) => format!(
            "listen={listen}\nreply={}\n",
            flag("--reply").map_or("ok", |r| r)
        ),
        (None, None) => {
            return Err(
                "usage: tiny-responder --config FILE | --listen IP:PORT [--reply TEXT]".into(),
            );
        }
    };
    let mut listen = None;
    let mut reply = String::from("ok");
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("listen=") {
            listen = Some(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("reply=") {
            reply = v.trim().to_string();
        }
    }
    let listen = listen.ok_or("config has no listen= line")?;
    let listener = TcpListener::bind(&listen).map_err(|e| format!("binding {listen}: {e}"))?;
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let mut buf = [0u8; 4096];
        let _ = stream.read(&mut buf);
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
            reply.len(),
            reply
        );
        let _ = stream.write_all(resp.as_bytes());
    }
    Ok(())
}
