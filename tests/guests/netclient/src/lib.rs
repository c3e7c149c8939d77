//! A guest that opens TCP connections, for the host's socket-grant tests.
//!
//! Kept apart from `tests/guests/hostile`: using `std::net` makes the
//! component import `wasi:sockets`, which the host refuses unless the grant
//! lists sockets — the hostile guest must load under a bare grant.
//!
//! | instruction | input          | what it does |
//! |-------------|----------------|--------------|
//! | `ok`        | —              | answers `fine` |
//! | `connect`   | `ADDR:PORT`    | `TcpStream::connect`, sends `ping\n`, reads one line: `reply: …`, or `error: …` naming the failing step |
//! | `resolve`   | `NAME:PORT`    | `ToSocketAddrs` (wasi:sockets/ip-name-lookup): `resolved: …` or `error: …` |
//! | `listen`    | `ADDR:PORT`    | `TcpListener::bind`: `listening on …` or `error: …` |
//!
//! `improve` always answers `Err("not supported")`.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};

use vivarium_guest::{Answer, ImproveContext, MetaAgent, Proposal, Task, TaskAgent};

fn connect(addr: &str) -> String {
    let mut stream = match TcpStream::connect(addr) {
        Ok(s) => s,
        Err(e) => return format!("error: connect: {e}"),
    };
    if let Err(e) = stream.write_all(b"ping\n") {
        return format!("error: write: {e}");
    }
    let mut line = String::new();
    match BufReader::new(stream).read_line(&mut line) {
        Ok(_) => format!("reply: {}", line.trim_end()),
        Err(e) => format!("error: read: {e}"),
    }
}

fn resolve(name: &str) -> String {
    match name.to_socket_addrs() {
        Ok(addrs) => format!("resolved: {}", addrs.map(|a| a.to_string()).collect::<Vec<_>>().join(", ")),
        Err(e) => format!("error: {e}"),
    }
}

fn listen(addr: &str) -> String {
    match TcpListener::bind(addr) {
        Ok(l) => match l.local_addr() {
            Ok(a) => format!("listening on {a}"),
            Err(e) => format!("error: local_addr: {e}"),
        },
        Err(e) => format!("error: bind: {e}"),
    }
}

struct NetClient;

impl TaskAgent for NetClient {
    fn solve(task: Task) -> Result<Answer, String> {
        let input = task.input.trim();
        let output = match task.instruction.trim() {
            "ok" => "fine".to_string(),
            "connect" => connect(input),
            "resolve" => resolve(input),
            "listen" => listen(input),
            other => return Err(format!("unknown instruction {other:?}")),
        };
        Ok(Answer::new(output))
    }
}

impl MetaAgent for NetClient {
    fn improve(_ctx: ImproveContext) -> Result<Proposal, String> {
        Err("not supported".to_string())
    }
}

vivarium_guest::export!(NetClient);
