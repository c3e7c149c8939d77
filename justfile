# Convenience recipes; each mirrors a plain command from the README.

# The main job on the embedded defaults.
demo:
    cargo run -- demo

# Install toolchains (idempotent) and run every test.
test:
    bash scripts/setup.sh
    cargo test --workspace

# Benchmarks (criterion); ratios are printed.
bench:
    cargo bench -p vivarium --bench runtime

# Fuzz every target for `seconds` each (nightly + cargo-fuzz; SECURITY.md, "Fuzzing").
fuzz seconds="600":
    for t in manifest policy proposal task component; do \
        mkdir -p fuzz/work/$t && \
        cargo +nightly fuzz run -s none $t fuzz/work/$t fuzz/corpus/$t -- -max_total_time={{seconds}} || exit 1; \
    done
