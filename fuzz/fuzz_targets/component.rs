//! Component loading: any bytes (binary or text) either load or are refused
//! with a typed error — never a panic. What loads is inspected against the
//! bare grant and linked (`prepare`), which again ends in `Ok` or a typed
//! error.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use vivarium::caps::{policy::Policy, resolve};
use vivarium::runtime::{Runtime, RuntimeConfig};
use vivarium::{inspect, Error};

struct Host {
    rt: Runtime,
    exec: tokio::runtime::Runtime,
}

fn host() -> &'static Host {
    static HOST: OnceLock<Host> = OnceLock::new();
    HOST.get_or_init(|| {
        // A small pool: only loading and linking happen here, never a call.
        let config = RuntimeConfig {
            total_instances: 4,
            max_memory: 64 << 20,
            compile_timeout: Duration::from_secs(20),
            long_lane_threads: 1,
            ..RuntimeConfig::default()
        };
        let exec = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
        let rt = exec.block_on(async { Runtime::new(config) }).expect("the runtime starts");
        Host { rt, exec }
    })
}

fuzz_target!(|data: &[u8]| {
    let h = host();
    let loaded = match h.exec.block_on(h.rt.load(data)) {
        Ok(l) => l,
        // Typed refusals: what the bytes are not, or that they do not validate.
        Err(Error::Invalid(_)) => return,
        Err(e) => panic!("loading arbitrary bytes must end in Invalid, not {e:?}"),
    };
    let r = resolve::resolve_bare(&Policy::default(), &Default::default());
    let _ = inspect::inspect(&loaded, &r);
    let _ = h.rt.prepare(&loaded, r.grant);
});
