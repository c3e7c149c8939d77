//! A hostile guest for the host's tests.
//!
//! `solve` dispatches on `task.instruction` to one attack; `task.input` may
//! carry a parameter. Every attack must end as a typed limit hit, a trap, a
//! refusal or a harmless answer — never a host crash, a hang or a leak.
//!
//! | instruction    | input                      | what it does |
//! |----------------|----------------------------|--------------|
//! | `ok`           | —                          | answers `fine` |
//! | `echo`         | any                        | answers with the input |
//! | `loop`         | —                          | spins forever (fuel / epoch) |
//! | `grow-memory`  | —                          | allocates and touches 1 MiB chunks forever (memory limit) |
//! | `recurse`      | depth (default unbounded)  | non-tail recursion on the wasm stack (stack limit) |
//! | `recurse-shadow` | —                        | non-tail recursion with 128-byte frames on the shadow stack in linear memory |
//! | `panic`        | message                    | `panic!("hostile panic: {input}")` (trap) |
//! | `trap`         | —                          | executes `unreachable` |
//! | `abort`        | —                          | `std::process::abort()` |
//! | `exit`         | exit code (default 0)      | `std::process::exit(code)` (wasi:cli/exit) |
//! | `sleep`        | seconds (default 3600)     | `std::thread::sleep` (deadline) |
//! | `clock-spin`   | seconds (default 3600)     | loops until `Instant::now()` is that much later |
//! | `read-file`    | path (e.g. `/etc/passwd`)  | `std::fs::read_to_string`, contents or error as the output |
//! | `write-file`   | path                       | `std::fs::write` of a few bytes, result as the output |
//! | `list-dir`     | path (default `/`)         | `std::fs::read_dir`, listing or error as the output |
//! | `write-read`   | path                       | writes `written by the guest\n` to the path, reads it back: `read back: …` or `error: …` |
//! | `append`       | path                       | opens an existing file for appending (no create) and writes: `appended …` or `error: …` |
//! | `fill-disk`    | `PATH|MiB` (default 256)   | writes that many MiB in 64 KiB chunks to PATH: `wrote N MiB` or `error after K KiB: …` |
//! | `fill-files`   | `DIR|N` (default 100000)   | creates N empty files in DIR: `created N files` or `error after K files: …` |
//! | `symlink`      | `TARGET|LINK`              | creates a symlink LINK → TARGET, then reads through it: `read: …`, or `error: …` at the failing step |
//! | `hard-link`    | `SRC|DST`                  | `std::fs::hard_link(SRC, DST)`, then reads DST: `read: …` or `error: …` |
//! | `entropy`      | —                          | 16 random bytes (wasi:random), a hash keyed by std's random seed, the wall clock and two monotonic readings |
//! | `env`          | —                          | all `std::env::vars()` and `args()` as the output |
//! | `huge-return`  | bytes (default 200000000)  | answers with an output string that long |
//! | `huge-alloc`   | bytes (default 4294967295) | one `Vec::with_capacity` of that size |
//! | `log-flood`    | `N` or `N:SIZE` (default 1000000:65536) | calls `log` N times with SIZE-byte messages |
//! | `stdout-flood` | lines (default unbounded)  | `println!` 1 KiB lines |
//! | `stderr-flood` | lines (default unbounded)  | `eprintln!` 1 KiB lines |
//! | `thread-spawn` | —                          | tries to start a thread that spins forever: `spawned` or `error: …` |
//! | `stdin-read`   | —                          | reads stdin to the end: `stdin: N bytes` or `error: …` |
//! | `random-huge`  | bytes (default 67108864)   | one `wasi:random` `get-random-bytes` of that many bytes, handed back through `cabi_realloc`: `got N random bytes` |
//! | `random-loop`  | calls (default unbounded)  | that many `get-random-bytes` of 1 MiB each: host work, little guest work: `got N random bytes` |
//!
//! `improve` always answers `Err("not supported")`.
//!
//! Observed under wasmtime (64 MiB memory limit, 512 KiB wasm stack, fuel and
//! epoch deadline): `grow-memory`, `huge-alloc` and a `huge-return` larger than
//! memory end in Rust's allocation-failure abort, i.e. an `unreachable` trap —
//! the host must tell a memory-limit hit from its resource limiter, not from
//! the trap code. `recurse` ends in "call stack exhausted"; `recurse-shadow`
//! runs Rust's shadow stack (in linear memory) below address 0 first and
//! ends in an out-of-bounds memory access. `exit` ends in a wasi:cli/exit error (status 1 for any
//! non-zero code, since wasip2's `exit` takes a `result`). Built for
//! `wasm32-unknown-unknown`, the file attacks answer "operation not supported
//! on this platform" and `sleep`, `clock-spin` and `env` trap: there is no
//! WASI to ask.

use std::hint::black_box;
use std::time::{Duration, Instant};

use vivarium_guest::{log, Answer, ImproveContext, MetaAgent, Proposal, Task, TaskAgent};

fn parse_or<T: std::str::FromStr>(input: &str, default: T) -> T {
    input.trim().parse().unwrap_or(default)
}

fn spin() -> ! {
    let mut i: u64 = 0;
    loop {
        i = black_box(i.wrapping_add(1));
    }
}

fn grow_memory() -> ! {
    let mut held: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0u8; 1 << 20];
        // Touch every page so the memory is really used.
        for i in (0..chunk.len()).step_by(4096) {
            chunk[i] = black_box(1);
        }
        held.push(black_box(chunk));
        black_box(&held);
    }
}

/// Unbounded non-tail recursion that lives on the wasm stack only (no
/// shadow-stack frame): it ends at the engine's wasm stack limit. `stop` comes
/// from the input, so the compiler cannot bound the depth; the result is
/// combined non-associatively after the call, so it cannot become a loop.
#[inline(never)]
fn recurse(depth: u64, stop: u64) -> u64 {
    if depth == stop {
        return depth;
    }
    let below = recurse(depth.wrapping_add(1), stop);
    below.wrapping_mul(depth | 1) ^ depth
}

/// The same with a 128-byte frame on Rust's shadow stack (in linear memory),
/// which runs out before the wasm stack does on most engines.
#[inline(never)]
fn recurse_shadow(depth: u64) -> u64 {
    let frame = black_box([depth; 8]);
    if black_box(depth) == u64::MAX {
        return 0;
    }
    let below = recurse_shadow(black_box(depth + 1));
    below.wrapping_add(frame[black_box(3)])
}

fn read_file(path: &str) -> String {
    match std::fs::read_to_string(path) {
        Ok(contents) => contents,
        Err(e) => format!("error: {e}"),
    }
}

fn write_file(path: &str) -> String {
    match std::fs::write(path, b"hostile was here\n") {
        Ok(()) => format!("wrote {path}"),
        Err(e) => format!("error: {e}"),
    }
}

fn write_read(path: &str) -> String {
    if let Err(e) = std::fs::write(path, b"written by the guest\n") {
        return format!("error: write: {e}");
    }
    match std::fs::read_to_string(path) {
        Ok(contents) => format!("read back: {contents}"),
        Err(e) => format!("error: read: {e}"),
    }
}

fn append(path: &str) -> String {
    use std::io::Write;
    let file = std::fs::OpenOptions::new().append(true).open(path);
    match file.and_then(|mut f| f.write_all(b"appended by the guest\n")) {
        Ok(()) => format!("appended {path}"),
        Err(e) => format!("error: {e}"),
    }
}

/// `path|MiB`: write up to MiB mebibytes of 64 KiB chunks to `path`.
fn fill_disk(input: &str) -> String {
    use std::io::Write;
    let (path, mib) = input.split_once('|').unwrap_or((input, "256"));
    let mib: usize = mib.parse().unwrap_or(256);
    let chunk = vec![0x5au8; 64 << 10];
    let mut f = match std::fs::File::create(path) {
        Ok(f) => f,
        Err(e) => return format!("error: {e}"),
    };
    for i in 0..mib * 16 {
        if let Err(e) = f.write_all(&chunk) {
            return format!("error after {} KiB: {e}", i * 64);
        }
    }
    format!("wrote {mib} MiB")
}

/// `dir|N`: create N empty files in `dir`.
fn fill_files(input: &str) -> String {
    let (dir, n) = input.split_once('|').unwrap_or((input, "100000"));
    let n: usize = n.parse().unwrap_or(100_000);
    for i in 0..n {
        if let Err(e) = std::fs::write(format!("{dir}/{i}"), b"") {
            return format!("error after {i} files: {e}");
        }
    }
    format!("created {n} files")
}

fn symlink(input: &str) -> String {
    let Some((target, link)) = input.split_once('|') else {
        return "error: input is not TARGET|LINK".into();
    };
    if let Err(e) = raw::symlink(target, link) {
        return format!("error: symlink: {e}");
    }
    match std::fs::read_to_string(link) {
        Ok(contents) => format!("read: {contents}"),
        Err(e) => format!("error: read: {e}"),
    }
}

fn hard_link(input: &str) -> String {
    let Some((src, dst)) = input.split_once('|') else {
        return "error: input is not SRC|DST".into();
    };
    if let Err(e) = std::fs::hard_link(src, dst) {
        return format!("error: hard_link: {e}");
    }
    match std::fs::read_to_string(dst) {
        Ok(contents) => format!("read: {contents}"),
        Err(e) => format!("error: read: {e}"),
    }
}

/// Everything a guest can learn from the host's entropy and clocks.
fn entropy() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::time::{SystemTime, UNIX_EPOCH};
    let mut bytes = [0u8; 16];
    let random = match fill_random(&mut bytes) {
        Ok(()) => bytes.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        Err(e) => format!("error: {e}"),
    };
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    let keyed = h.finish();
    let wall = match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos().to_string(),
        Err(e) => format!("error: {e}"),
    };
    let t0 = Instant::now();
    let t1 = Instant::now();
    format!(
        "random={random} keyed={keyed:016x} wall={wall} mono0={t0:?} mono1={t1:?} mono-delta={}",
        t1.duration_since(t0).as_nanos()
    )
}

#[cfg(all(target_os = "wasi", target_env = "p2"))]
fn fill_random(out: &mut [u8]) -> Result<(), String> {
    #[link(wasm_import_module = "wasi:random/random@0.2.6")]
    extern "C" {
        #[link_name = "get-random-u64"]
        fn get_random_u64() -> u64;
    }
    for chunk in out.chunks_mut(8) {
        // SAFETY: a scalar-only WASI import.
        let r = unsafe { get_random_u64() }.to_le_bytes();
        chunk.copy_from_slice(&r[..chunk.len()]);
    }
    Ok(())
}

/// One `get-random-bytes` of `len` bytes: the host makes the list and hands
/// it back through this guest's `cabi_realloc`.
#[cfg(all(target_os = "wasi", target_env = "p2"))]
fn random_bytes(len: u64) -> Vec<u8> {
    #[link(wasm_import_module = "wasi:random/random@0.2.6")]
    extern "C" {
        #[link_name = "get-random-bytes"]
        fn get_random_bytes(len: i64, ret: *mut [usize; 2]);
    }
    let mut ret = [0usize; 2];
    // SAFETY: canonical ABI of `get-random-bytes`: the host writes the list's
    // pointer and length; the list was allocated with `cabi_realloc` and is ours.
    unsafe {
        get_random_bytes(len as i64, &mut ret);
        Vec::from_raw_parts(ret[0] as *mut u8, ret[1], ret[1])
    }
}

#[cfg(not(all(target_os = "wasi", target_env = "p2")))]
fn random_bytes(_len: u64) -> Vec<u8> {
    Vec::new()
}

#[cfg(not(all(target_os = "wasi", target_env = "p2")))]
fn fill_random(_out: &mut [u8]) -> Result<(), String> {
    Err("no wasi:random on this target".into())
}

fn list_dir(path: &str) -> String {
    let path = if path.is_empty() { "/" } else { path };
    match std::fs::read_dir(path) {
        Ok(entries) => entries
            .map(|e| match e {
                Ok(e) => e.path().display().to_string(),
                Err(e) => format!("error: {e}"),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Err(e) => format!("error: {e}"),
    }
}

fn env() -> String {
    let vars: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
    let args: Vec<String> = std::env::args().collect();
    format!("vars: [{}]\nargs: [{}]", vars.join(", "), args.join(", "))
}

fn log_flood(input: &str) -> String {
    let (n, size) = match input.trim().split_once(':') {
        Some((n, size)) => (parse_or(n, 1_000_000u64), parse_or(size, 65_536usize)),
        None => (parse_or(input, 1_000_000u64), 65_536usize),
    };
    let message = "L".repeat(size);
    for _ in 0..n {
        log::info(black_box(&message));
    }
    format!("logged {n} messages of {size} bytes")
}

fn flood(input: &str, stderr: bool) -> String {
    let lines: u64 = parse_or(input, u64::MAX);
    let line = "F".repeat(1023);
    for i in 0..lines {
        if stderr {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
        black_box(i);
    }
    format!("printed {lines} lines")
}

fn thread_spawn() -> String {
    match std::thread::Builder::new().spawn(|| spin()) {
        Ok(_) => "spawned".to_string(),
        Err(e) => format!("error: {e}"),
    }
}

fn stdin_read() -> String {
    use std::io::Read;
    let mut buf = Vec::new();
    match std::io::stdin().read_to_end(&mut buf) {
        Ok(n) => format!("stdin: {n} bytes"),
        Err(e) => format!("error: {e}"),
    }
}

fn clock_spin(seconds: u64) -> String {
    let start = Instant::now();
    let until = start + Duration::from_secs(seconds);
    let mut spins: u64 = 0;
    while Instant::now() < until {
        spins = black_box(spins.wrapping_add(1));
    }
    format!("spun {spins} times")
}

struct Hostile;

impl TaskAgent for Hostile {
    fn solve(task: Task) -> Result<Answer, String> {
        let input = task.input.as_str();
        let output = match task.instruction.trim() {
            "ok" => "fine".to_string(),
            "echo" => task.input.clone(),
            "loop" => spin(),
            "grow-memory" => grow_memory(),
            "recurse" => recurse(0, parse_or(input, u64::MAX)).to_string(),
            "recurse-shadow" => recurse_shadow(0).to_string(),
            "panic" => panic!("hostile panic: {input}"),
            "trap" => trap(),
            "abort" => std::process::abort(),
            "exit" => std::process::exit(parse_or(input, 0)),
            "sleep" => {
                let seconds = parse_or(input, 3600u64);
                std::thread::sleep(Duration::from_secs(seconds));
                format!("slept {seconds} s")
            }
            "clock-spin" => clock_spin(parse_or(input, 3600)),
            "read-file" => read_file(input),
            "write-file" => write_file(input),
            "list-dir" => list_dir(input),
            "write-read" => write_read(input),
            "append" => append(input),
            "fill-disk" => fill_disk(input),
            "fill-files" => fill_files(input),
            "symlink" => symlink(input),
            "hard-link" => hard_link(input),
            "entropy" => entropy(),
            "env" => env(),
            "huge-return" => "x".repeat(parse_or(input, 200_000_000usize)),
            "huge-alloc" => {
                let v: Vec<u8> = Vec::with_capacity(parse_or(input, u32::MAX as usize));
                format!("allocated {} bytes", black_box(v).capacity())
            }
            "log-flood" => log_flood(input),
            "stdout-flood" => flood(input, false),
            "stderr-flood" => flood(input, true),
            "thread-spawn" => thread_spawn(),
            "stdin-read" => stdin_read(),
            "random-huge" => {
                let n = random_bytes(parse_or(input, 64u64 << 20)).len();
                format!("got {n} random bytes")
            }
            "random-loop" => {
                let mut n = 0u64;
                for _ in 0..parse_or(input, u64::MAX) {
                    n += black_box(random_bytes(1 << 20)).len() as u64;
                }
                format!("got {n} random bytes")
            }
            other => return Err(format!("unknown attack {other:?}")),
        };
        Ok(Answer::new(output))
    }
}

fn trap() -> ! {
    #[cfg(target_arch = "wasm32")]
    {
        core::arch::wasm32::unreachable()
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        std::process::abort()
    }
}

impl MetaAgent for Hostile {
    fn improve(_ctx: ImproveContext) -> Result<Proposal, String> {
        Err("not supported".to_string())
    }
}

vivarium_guest::export!(Hostile);

/// WASI calls that std does not expose on stable, made through hand-written
/// canonical-ABI imports (the same WASI version std links, so the component
/// imports each interface once).
#[cfg(all(target_os = "wasi", target_env = "p2"))]
mod raw {
    const ERROR_CODES: [&str; 37] = [
        "access", "would-block", "already", "bad-descriptor", "busy", "deadlock", "quota", "exist",
        "file-too-large", "illegal-byte-sequence", "in-progress", "interrupted", "invalid", "io",
        "is-directory", "loop", "too-many-links", "message-size", "name-too-long", "no-device", "no-entry",
        "no-lock", "insufficient-memory", "insufficient-space", "not-directory", "not-empty",
        "not-recoverable", "unsupported", "no-tty", "no-such-device", "overflow", "not-permitted", "pipe",
        "read-only", "invalid-seek", "text-file-busy", "cross-device",
    ];

    #[link(wasm_import_module = "wasi:filesystem/preopens@0.2.6")]
    extern "C" {
        #[link_name = "get-directories"]
        fn get_directories(ret: *mut [usize; 2]);
    }

    #[link(wasm_import_module = "wasi:filesystem/types@0.2.6")]
    extern "C" {
        #[link_name = "[method]descriptor.symlink-at"]
        fn symlink_at(this: u32, old: *const u8, old_len: usize, new: *const u8, new_len: usize, ret: *mut [u8; 2]);
        #[link_name = "[resource-drop]descriptor"]
        fn drop_descriptor(this: u32);
    }

    #[repr(C)]
    struct Preopen {
        handle: u32,
        name: *mut u8,
        name_len: usize,
    }

    /// `symlink-at` on the preopen whose name starts `link`: LINK → TARGET.
    pub fn symlink(target: &str, link: &str) -> Result<(), String> {
        let mut ret = [0usize; 2];
        // SAFETY: canonical ABI of `get-directories`: the host writes the
        // list's pointer and length; the list and its strings were allocated
        // with `cabi_realloc` and are ours.
        let preopens: Vec<(u32, String)> = unsafe {
            get_directories(&mut ret);
            let list = Vec::from_raw_parts(ret[0] as *mut Preopen, ret[1], ret[1]);
            list.into_iter()
                .map(|p| (p.handle, String::from_raw_parts(p.name, p.name_len, p.name_len)))
                .collect()
        };
        let mut result = Err(format!("no preopened directory holds `{link}`"));
        let mut used = false;
        for (handle, name) in &preopens {
            let rest = link.strip_prefix(name.as_str()).and_then(|r| r.strip_prefix('/'));
            match rest {
                Some(rest) if !used => {
                    used = true;
                    let mut out = [0u8; 2];
                    // SAFETY: canonical ABI of `symlink-at`; `out` gets the
                    // result's discriminant and error code.
                    unsafe { symlink_at(*handle, target.as_ptr(), target.len(), rest.as_ptr(), rest.len(), &mut out) };
                    result = if out[0] == 0 {
                        Ok(())
                    } else {
                        Err(ERROR_CODES.get(out[1] as usize).copied().unwrap_or("unknown error").to_string())
                    };
                }
                _ => {}
            }
        }
        for (handle, _) in preopens {
            // SAFETY: each handle is an owned descriptor we got above.
            unsafe { drop_descriptor(handle) };
        }
        result
    }
}

#[cfg(not(all(target_os = "wasi", target_env = "p2")))]
mod raw {
    pub fn symlink(_target: &str, _link: &str) -> Result<(), String> {
        Err("no wasi:filesystem on this target".into())
    }
}
